// ciel's control page: every parameter of the OSCQuery tree as a slider, switch, menu or button,
// grouped by stage. It is one more OSC client: it reads the tree over HTTP (GET /), listens to
// every value over the OSCQuery websocket (LISTEN /ciel) and sends binary OSC on the same socket,
// so a change from here travels the same routes as one from Pd or TouchOSC. It makes no request to
// any other host (the server's Content-Security-Policy says so too).
"use strict";

const GROUPS = [
  ["sound", ["audio"]], ["image", ["image"]], ["sky", ["sky"]], ["scene", ["scene", "note", "master", "panic"]],
  ["listening", ["listen"]],
];
const WIDE = 700;   // px: narrower screens start with the groups folded

// — OSC 1.0 encoding (big-endian, 4-byte aligned) —
const enc = new TextEncoder();
const dec = new TextDecoder();

function padded(bytes) {
  const out = new Uint8Array((bytes.length + 4) & ~3);   // at least one NUL
  out.set(bytes);
  return out;
}

function oscMessage(address, args) {
  let tags = ",";
  const parts = [padded(enc.encode(address))];
  for (const a of args) {
    if (typeof a === "boolean") { tags += a ? "T" : "F"; continue; }
    if (typeof a === "string") { tags += "s"; parts.push(padded(enc.encode(a))); continue; }
    const b = new DataView(new ArrayBuffer(4));
    if (Number.isInteger(a.int)) { tags += "i"; b.setInt32(0, a.int); } else { tags += "f"; b.setFloat32(0, a); }
    parts.push(new Uint8Array(b.buffer));
  }
  parts.splice(1, 0, padded(enc.encode(tags)));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function readString(view, at) {
  let end = at;
  while (end < view.byteLength && view.getUint8(end) !== 0) end++;
  const s = dec.decode(new Uint8Array(view.buffer, view.byteOffset + at, end - at));
  return [s, (end + 4) & ~3];
}

// One OSC message or bundle → [[address, args], ...]
function oscParse(buffer) {
  const view = new DataView(buffer);
  const out = [];
  const walk = (v) => {
    let [address, at] = readString(v, 0);
    if (address === "#bundle") {
      at = 16;
      while (at + 4 <= v.byteLength) {
        const size = v.getInt32(at);
        walk(new DataView(v.buffer, v.byteOffset + at + 4, size));
        at += 4 + size;
      }
      return;
    }
    let tags;
    [tags, at] = readString(v, at);
    const args = [];
    for (const t of tags.slice(1)) {
      if (t === "f") { args.push(v.getFloat32(at)); at += 4; }
      else if (t === "i") { args.push(v.getInt32(at)); at += 4; }
      else if (t === "d") { args.push(v.getFloat64(at)); at += 8; }
      else if (t === "T" || t === "F") args.push(t === "T");
      else if (t === "s" || t === "S") { let s; [s, at] = readString(v, at); args.push(s); }
      else if (t === "h" || t === "t") { args.push(Number(v.getBigInt64(at))); at += 8; }
      else if (t === "b") { at += 4 + ((v.getInt32(at) + 3) & ~3); args.push(null); }
      else if (t === "c" || t === "r" || t === "m") { args.push(v.getUint32(at)); at += 4; }
    }
    out.push([address, args]);
  };
  walk(view);
  return out;
}

// — state —
const controls = new Map();   // OSC address → {param, inputs, set(values)}
let socket = null;
let learnMode = false;
const pending = new Map();    // address → newest args not yet sent (one send per animation frame)
window.cielPage = { received: {}, sent: {}, ready: false };   // for tests and benches: Date.now() per address

function send(address, args) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(oscMessage(address, args));
}

function sendSoon(address, args) {
  const first = pending.size === 0;
  pending.set(address, args);
  if (first) requestAnimationFrame(() => {
    for (const [a, v] of pending) { send(a, v); window.cielPage.sent[a] = Date.now(); }
    pending.clear();
  });
}

function say(text) {
  const el = document.getElementById("said");
  el.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { el.textContent = ""; }, 4000);
}

// — building the page from the tree —
function leaves(node, out = []) {
  if (node.TYPE && node.FULL_PATH.startsWith("/ciel/")) out.push(node);
  for (const child of Object.values(node.CONTENTS || {})) leaves(child, out);
  return out;
}

function labelsOf(node) {
  const m = /\(((?:\d+ = [^,()]+(?:, )?)+)\)$/.exec(node.DESCRIPTION || "");
  return m ? m[1].split(", ").map((s) => s.replace(/^\d+ = /, "")) : null;
}

function fmt(v, step) {
  if (typeof v === "boolean") return v ? "on" : "off";
  return step >= 1 ? String(Math.round(v)) : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2);
}

function row(node, index, group) {
  const path = node.FULL_PATH;
  const short = path.slice(6).split("/").slice(1).join(" ") || path.slice(6);
  const label = index === null ? short : `${short} ${index}`;
  const address = index === null ? path : `${path}/${index}`;
  const el = document.createElement("div");
  el.className = "row";
  el.dataset.path = path;
  if (index !== null) el.dataset.index = index;
  const name = document.createElement("label");
  name.textContent = label;
  name.title = node.DESCRIPTION || "";
  el.append(name);
  const tag = node.TYPE[0];
  const range = (node.RANGE || [{}])[index || 0] || {};
  const unit = (node.UNIT || [""])[0];
  let input, show = null, set;
  if (tag === "N") {
    input = document.createElement("button");
    input.type = "button";
    input.textContent = short;
    input.addEventListener("click", () => { if (!learnPick(path, -1)) send(path, []); });
    set = () => { input.classList.add("fired"); setTimeout(() => input.classList.remove("fired"), 150); };
  } else if (tag === "T") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.setAttribute("role", "switch");
    input.addEventListener("change", () => sendSoon(address, [input.checked]));
    set = (v) => { input.checked = Boolean(v); };
  } else if (node.ACCESS === 1) {
    // measured (listen/*): a meter, read-only
    input = document.createElement("meter");
    input.min = range.MIN; input.max = range.MAX;
    show = document.createElement("output");
    set = (v) => { input.value = v; show.textContent = fmt(v, (range.MAX - range.MIN) / 1000); };
  } else if (labelsOf(node) && range.VALS) {
    input = document.createElement("select");
    labelsOf(node).forEach((text, i) => input.add(new Option(text, String(i))));
    input.addEventListener("change", () => sendSoon(address, [{ int: Number(input.value) }]));
    set = (v) => { input.value = String(Math.round(v)); };
  } else {
    input = document.createElement("input");
    input.type = "range";
    input.min = range.MIN; input.max = range.MAX;
    const step = tag === "i" ? 1 : (range.MAX - range.MIN) / 1000;
    input.step = String(step);
    show = document.createElement("output");
    input.addEventListener("input", () => {
      const v = Number(input.value);
      show.textContent = fmt(v, step);
      sendSoon(address, [tag === "i" ? { int: v } : v]);
    });
    set = (v) => { input.value = String(v); show.textContent = fmt(v, step); };
  }
  input.id = `p-${address.slice(6).replaceAll("/", "-")}`;
  name.htmlFor = input.id;
  input.addEventListener("pointerdown", (e) => { if (learnPick(path, index === null ? -1 : index)) e.preventDefault(); });
  el.append(input);
  if (show) el.append(show);
  if (unit && !unit.startsWith("color")) {
    const u = document.createElement("span");
    u.className = "unit";
    u.textContent = unit.split(".").pop();
    el.append(u);
  }
  const forget = document.createElement("button");
  forget.type = "button";
  forget.className = "unlearn";
  forget.textContent = "✕";
  forget.title = "remove this control's MIDI mappings";
  forget.addEventListener("click", () => { send("/ciel/unlearn", [path.slice(6), { int: index === null ? -1 : index }]); say(`MIDI mappings of ${label} removed`); });
  el.append(forget);
  group.append(el);
  return set;
}

function learnPick(path, index) {
  if (!learnMode) return false;
  send("/ciel/learn", [path.slice(6), { int: index }]);
  document.querySelectorAll(".row.armed").forEach((r) => r.classList.remove("armed"));
  const sel = index >= 0 ? `.row[data-path="${path}"][data-index="${index}"]` : `.row[data-path="${path}"]`;
  const r = document.querySelector(sel);
  if (r) r.classList.add("armed");
  say("now move a knob or fader on the MIDI controller");
  return true;
}

function build(root) {
  const main = document.getElementById("groups");
  const open = new Set([...main.querySelectorAll("details[open]")].map((d) => d.id));   // kept over a reconnect
  const first = main.children.length === 0;
  main.replaceChildren();
  const nodes = leaves(root).filter((n) => (n.ACCESS & 2 || (n.ACCESS === 1 && n.VALUE))
    && !/^\/ciel\/(preset|learn|unlearn|mod)/.test(n.FULL_PATH));
  for (const [title, prefixes] of GROUPS) {
    const box = document.createElement("details");
    box.className = "group";
    box.id = `group-${title}`;
    box.open = first ? window.innerWidth >= WIDE : open.has(box.id);
    const summary = document.createElement("summary");
    summary.textContent = title;
    box.append(summary);
    const body = document.createElement("div");
    body.className = "rows";
    box.append(body);
    for (const node of nodes.filter((n) => prefixes.includes(n.FULL_PATH.split("/")[2]))) {
      const size = node.TYPE.length;
      if (node.FULL_PATH === "/ciel/panic") continue;   // the big button in the bar
      const setters = size > 1 ? [...Array(size).keys()].map((i) => row(node, i, body)) : [row(node, null, body)];
      const entry = { node, set: (values) => values.forEach((v, i) => setters[i] && setters[i](v)) };
      controls.set(node.FULL_PATH, entry);
      if (node.VALUE) entry.set(node.VALUE);
      if (size > 1) setters.forEach((s, i) => controls.set(`${node.FULL_PATH}/${i}`, { node, set: (vals) => s(vals[0]) }));
    }
    main.append(box);
  }
}

// — the websocket —
function connect() {
  const link = document.getElementById("link");
  socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ COMMAND: "LISTEN", DATA: "/ciel" }));
    link.textContent = "live";
    link.className = "link live";
    window.cielPage.ready = true;
  });
  socket.addEventListener("message", (e) => {
    if (typeof e.data === "string") return;
    for (const [address, args] of oscParse(e.data)) {
      if (address === "/ciel/preset/stored") { say(`preset “${args[0]}” stored`); refreshStatus(); continue; }
      if (address === "/ciel/error") {
        say(`refused: ${args[1]}`);
        if (args[0] === "/ciel/learn") document.querySelectorAll(".row.armed").forEach((r) => r.classList.remove("armed"));
        continue;
      }
      const c = controls.get(address);
      if (c) c.set(args);
      window.cielPage.received[address] = Date.now();   // after the control shows it (benches read this)
    }
  });
  socket.addEventListener("close", () => {
    window.cielPage.ready = false;
    link.textContent = "reconnecting…";
    link.className = "link";
    setTimeout(start, 1500);
  });
}

async function refreshStatus() {
  let status;
  try {
    const r = await fetch("status", { cache: "no-store" });
    status = await r.json();
  } catch (e) {
    return;
  }
  if (status.name) document.getElementById("name").textContent = status.name;
  const problems = document.getElementById("problems");
  problems.replaceChildren(...(status.problems || []).map((p) => Object.assign(document.createElement("li"), { textContent: p })));
  const select = document.getElementById("preset");
  const names = status.presets || [];
  if (select.options.length !== names.length || [...select.options].some((o, i) => o.value !== names[i])) {
    select.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  const armed = document.querySelector(".row.armed");
  if (armed && !status.learning) { armed.classList.remove("armed"); say("learned"); }
  document.getElementById("learn").disabled = !status.midi;
}

async function start() {
  try {
    const r = await fetch("/", { cache: "no-store" });
    build(await r.json());
  } catch (e) {
    document.getElementById("link").textContent = "cannot read the tree; retrying";
    setTimeout(start, 2000);
    return;
  }
  connect();
}

document.getElementById("panic").addEventListener("click", () => { send("/ciel/panic", []); say("panic: sound muted (unmute with audio mute)"); });
document.getElementById("learn").addEventListener("click", (e) => {
  learnMode = !learnMode;
  e.currentTarget.setAttribute("aria-pressed", String(learnMode));
  document.body.classList.toggle("learning", learnMode);
  if (!learnMode) send("/ciel/learn/cancel", []);
  say(learnMode ? "MIDI learn: tap a control, then move a knob; ✕ forgets a control's mappings" : "");
});
document.getElementById("recall").addEventListener("click", () => {
  const name = document.getElementById("preset").value;
  if (name) { send("/ciel/preset/recall", [name]); say(`preset “${name}” recalled`); }
});
document.getElementById("presets").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = document.getElementById("preset-name").value.trim();
  if (!name) return;
  send("/ciel/preset/store", [name]);
  say(`storing “${name}”… (refused unless this is the ciel machine or [osc] remote_admin is on)`);
});
setInterval(refreshStatus, 1000);
refreshStatus();
start();
