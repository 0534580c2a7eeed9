// The broadcast page: follows the server's scene clock, shows each scene's image in the oval and
// plays its sound after the visitor presses start. Scene changes arrive over Server-Sent Events
// (/events); the page also switches by itself at the announced time to the prefetched next scene,
// and polls /scene.json when the event stream is silent or gone, backing off while the server is
// away. A static export (`ciel broadcast --export`) has no server logic: the page reads
// manifest.json once (epoch, period, scenes) and computes the current scene from the clock, so
// every visitor sees the same scene from any static host or CDN. window.ciel exposes the state
// for the browser tests.
import { Sky, layout } from "./sky.js";
import { Sound } from "./sound.js";

const settings = JSON.parse(document.getElementById("ciel-settings")?.textContent || "{}");
const $ = (id) => document.getElementById(id);
const state = {
  offset: 0,          // server clock - local clock, seconds
  latest: null,       // newest scene description from the server
  shown: null,        // the scene on screen (and in the ears, once started)
  pending: null,      // the scene being switched to (its files loading)
  started: false,
  connected: false,
  backoff: 1,
  errors: [],
};
let sky = null, sound = null, source = null, boundaryTimer = 0, pollTimer = 0;

const serverNow = () => Date.now() / 1000 + state.offset;
let manifest = null;  // a static export's {epoch, period, scenes}

/** The scene a static export shows at server time `t` (scene ids cycle through the exported ones). */
function staticScene(t) {
  const { epoch, period, scenes } = manifest;
  const id = Math.floor((t - epoch) / period);
  const at = (k) => ({ id: k, ...scenes[((k % scenes.length) + scenes.length) % scenes.length] });
  return { ...at(id), period, held: false, starts_at: epoch + id * period, ends_at: epoch + (id + 1) * period, next: at(id + 1) };
}

async function loadManifest() {
  const t0 = Date.now() / 1000;
  const res = await fetch("manifest.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`manifest.json: HTTP ${res.status}`);
  manifest = await res.json();
  // The host's Date header (1 s resolution) corrects only a visitor clock that is clearly wrong.
  const date = Date.parse(res.headers.get("Date") || "") / 1000;
  const skew = date + 0.5 - (t0 + Date.now() / 1000) / 2;
  if (Number.isFinite(skew) && Math.abs(skew) > 2) state.offset = skew;
}

function status(text) { $("status").textContent = text; }

function fail(where, err) {
  state.errors.push(`${where}: ${err && err.message ? err.message : err}`);
  status(`${where}: ${err && err.message ? err.message : err}`);
}

// -- scenes ------------------------------------------------------------------------------------
async function loadImage(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return createImageBitmap(await res.blob());
}

function soundUrl(scene) {
  const opus = document.createElement("audio").canPlayType('audio/ogg; codecs="opus"');
  return scene.sound_fallback && !opus ? scene.sound_fallback : scene.sound;
}

const images = new Map();  // url -> Promise<ImageBitmap>, current and next scene
function image(url) {
  if (!images.has(url)) {
    const p = loadImage(url);
    p.catch(() => images.delete(url));
    images.set(url, p);
    while (images.size > 4) images.delete(images.keys().next().value);
  }
  return images.get(url);
}

function prefetch(scene) {
  if (!scene) return;
  image(scene.image).catch(() => {});
  if (sound) sound.load(soundUrl(scene)).catch(() => {});
}

/** Fetch the next scene's files at a random moment in the first half of the time left before it
 *  starts (at most 10 s from now): a thousand pages that learn of a scene in the same instant do
 *  not all ask the server in that instant, and the files are still here before they are needed. */
let prefetchTimer = null;
function prefetchSoon(scene) {
  clearTimeout(prefetchTimer);
  if (!scene) return;
  const left = state.latest ? Math.max(0, state.latest.ends_at - serverNow()) : 0;
  prefetchTimer = setTimeout(() => prefetch(scene), Math.random() * Math.min(10, left / 2) * 1000);
}

/** True if `scene` should replace `than`: a later scene, or the real files of a held one. */
function newer(scene, than) {
  return !than || scene.id > than.id || (scene.id === than.id && than.held && !scene.held);
}

/** Switch to `scene` once its image (and sound, if started) are ready. Older scenes are ignored. */
async function show(scene) {
  if (!scene || !newer(scene, state.pending || state.shown)) return;
  state.pending = scene;
  try {
    const [bitmap, buffer] = await Promise.all([image(scene.image), sound ? sound.load(soundUrl(scene)) : null]);
    if (!newer(scene, state.shown)) return;
    if (sky) sky.setImage(bitmap);
    if (sound && buffer) sound.play(buffer, serverNow() - scene.starts_at);
    state.shown = scene;
    $("sky").setAttribute("aria-label", `An oval all-sky map showing scene ${scene.id} (${scene.name})`);
  } catch (err) {
    fail("scene", err);
  } finally {
    if (state.pending === scene) state.pending = null;
  }
}

/** A scene description from /events or /scene.json. */
function receive(scene, sentAt) {
  if (typeof scene.server_time === "number") state.offset = scene.server_time - sentAt;
  if (!state.latest || scene.id >= state.latest.id) state.latest = scene;
  show(scene);
  prefetchSoon(scene.next);
  scheduleBoundary();
}

/** At the end of the scene, show the prefetched next one; if no news follows, ask the server. */
function scheduleBoundary() {
  clearTimeout(boundaryTimer);
  const scene = state.latest;
  if (!scene) return;
  const wait = Math.max(0, (scene.ends_at - serverNow()) * 1000);
  boundaryTimer = setTimeout(() => {
    const next = scene.next;
    if (next && (!state.latest || state.latest.id === scene.id)) {
      const period = scene.period;
      state.latest = { ...next, period, starts_at: scene.ends_at, ends_at: scene.ends_at + period, next: null };
      show(state.latest);
    }
    clearTimeout(pollTimer);
    pollTimer = setTimeout(() => { if (!state.latest || !state.latest.next) poll(); }, 2500);
  }, wait);
}

// -- connection --------------------------------------------------------------------------------
async function poll() {
  clearTimeout(pollTimer);
  if (settings.static) {
    try {
      if (!manifest) await loadManifest();
      state.connected = true;
      status("");
      receive(staticScene(serverNow()), Date.now() / 1000);
    } catch (err) {
      status(`The broadcast is not reachable; trying again in ${state.backoff} s`);
      pollTimer = setTimeout(poll, state.backoff * 1000);
      state.backoff = Math.min(30, state.backoff * 2);
    }
    return;
  }
  const t0 = Date.now() / 1000;
  try {
    const res = await fetch("scene.json", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const scene = await res.json();
    receive(scene, (t0 + Date.now() / 1000) / 2);
    state.backoff = 1;
    // just after the next boundary, spread over a second so that polling pages do not arrive together
    if (!state.connected) pollTimer = setTimeout(poll, Math.min(10, scene.time_to_next + 0.3 + Math.random()) * 1000);
  } catch (err) {
    status(`The broadcast is not reachable; trying again in ${state.backoff} s`);
    pollTimer = setTimeout(poll, state.backoff * 1000);
    state.backoff = Math.min(30, state.backoff * 2);
  }
}

function connect() {
  if (settings.static || !window.EventSource) { poll(); return; }
  if (source) source.close();
  source = new EventSource("events");
  source.addEventListener("open", () => {
    state.connected = true;
    state.backoff = 1;
    status("");
  });
  source.addEventListener("scene", (e) => receive(JSON.parse(e.data), Date.now() / 1000));
  source.addEventListener("error", () => {
    state.connected = false;
    if (source.readyState === EventSource.CLOSED) {  // refused (server full or gone): back off, poll meanwhile
      const wait = state.backoff;
      status(`Reconnecting in ${wait} s`);
      state.backoff = Math.min(30, state.backoff * 2);
      setTimeout(connect, wait * 1000);
      poll();
    } else {
      status("Reconnecting");
    }
  });
}

// -- page ----------------------------------------------------------------------------------------
function placeCircle() {
  const lay = layout(window.innerWidth, window.innerHeight);
  const size = Math.max(24, 2 * lay.noteR);
  const c = $("circle");
  c.style.width = c.style.height = `${size}px`;
  c.style.left = `${lay.noteX}px`;
  c.style.bottom = `${lay.noteY}px`;
}

async function start() {
  if (state.started) return;
  state.started = true;
  $("intro").hidden = true;
  $("controls").hidden = false;
  try {
    sound = new Sound(Number($("volume").value));
    await sound.resume();
    const scene = state.shown;
    if (scene) {
      const buffer = await sound.load(soundUrl(scene));
      if (state.shown === scene) sound.play(buffer, serverNow() - scene.starts_at);
    }
    prefetch(state.latest && state.latest.next);
  } catch (err) {
    fail("sound", err);
  }
  $("volume").focus();
}

function setup() {
  const bg = (settings.sky && settings.sky.background) || [0, 0, 0];
  document.documentElement.style.setProperty("--bg", `rgb(${bg.map((v) => Math.round(v * 255)).join(",")})`);
  $("volume").value = String(settings.volume ?? 0.7);
  $("volume").addEventListener("input", (e) => sound && sound.setVolume(Number(e.target.value)));
  $("start").addEventListener("click", start);
  const note = $("note");
  $("circle").addEventListener("click", () => {
    note.showModal();
    $("circle").setAttribute("aria-expanded", "true");
  });
  note.addEventListener("close", () => {
    $("circle").setAttribute("aria-expanded", "false");
    $("circle").focus();
  });
  window.addEventListener("resize", placeCircle);
  placeCircle();
  Sky.create($("sky"), settings, serverNow).then((s) => {
    sky = s;
    if (state.shown) image(state.shown.image).then((b) => sky.setImage(b));
  }).catch((err) => fail("sky", err));
  connect();
}

window.ciel = {
  get sceneId() { return state.shown ? state.shown.id : null; },
  get scene() { return state.shown; },
  get serverSceneId() { return state.latest ? state.latest.id : null; },
  get timeToNext() { return state.latest ? state.latest.ends_at - serverNow() : null; },
  get started() { return state.started; },
  get connected() { return state.connected; },
  get skyReady() { return !!(sky && sky.hasImage); },
  get frames() { return sky ? sky.frames : 0; },
  get errors() { return state.errors.slice(); },
  get audio() { return sound ? { state: sound.ctx.state, time: sound.ctx.currentTime, ...sound.level() } : null; },
  get layout() { return sky ? sky.layout : null; },
};

setup();
