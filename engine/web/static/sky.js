// The oval all-sky map in WebGL2, drawn by the same shaders as the window and the offscreen
// render: shaders/sky.vert and shaders/sky.frag (with projection.glsl and noise.glsl), served
// with the "#version 300 es" header by the broadcast server. Only the layout (where the oval and
// the grey circle go) and the rotation matrix are computed here, as in engine/visual/projection.py.

// Margins as fractions of the window (engine/visual/projection.py).
const MARGIN_SIDE = 0.04, MARGIN_TOP = 0.04, MARGIN_BOTTOM = 0.10, NOTE_RADIUS = 0.018;
const SQRT2 = Math.SQRT2;
const DEG = Math.PI / 180;
const FRAME_MS = 1000 / 30;  // at most 30 frames per second: the grain does not need more

/** Largest oval inside the margins; pixels, origin bottom-left (as gl_FragCoord). */
export function layout(width, height) {
  const availW = width * (1 - 2 * MARGIN_SIDE);
  const availH = height * (1 - MARGIN_TOP - MARGIN_BOTTOM);
  const scale = Math.min(availW / (4 * SQRT2), availH / (2 * SQRT2));
  return {
    cx: width / 2, cy: height * MARGIN_BOTTOM + availH / 2, scale,
    noteX: width / 2, noteY: height * MARGIN_BOTTOM / 2, noteR: height * NOTE_RADIUS,
  };
}

/** Column-major mat3: view vector -> sky vector, centre of the map at (lon0, lat0), radians. */
export function rotation(lon0, lat0, roll) {
  const [cl, sl, cb, sb, cr, sr] = [Math.cos(lon0), Math.sin(lon0), Math.cos(lat0), Math.sin(lat0),
    Math.cos(roll), Math.sin(roll)];
  const rz = [[cl, -sl, 0], [sl, cl, 0], [0, 0, 1]];
  const ry = [[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]];
  const rx = [[1, 0, 0], [0, cr, -sr], [0, sr, cr]];
  const mul = (a, b) => a.map((row) => [0, 1, 2].map((j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j]));
  const r = mul(mul(rz, ry), rx);
  return new Float32Array([r[0][0], r[1][0], r[2][0], r[0][1], r[1][1], r[2][1], r[0][2], r[1][2], r[2][2]]);
}

async function text(url) {
  const res = await fetch(url, { cache: "no-cache" });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.text();
}

function compile(gl, type, source, name) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
    throw new Error(`${name}: ${gl.getShaderInfoLog(shader)}`);
  }
  return shader;
}

export class Sky {
  /** Fetch the shared shaders and build the program; throws if WebGL2 or a shader fails. */
  static async create(canvas, settings, clock) {
    const gl = canvas.getContext("webgl2", { antialias: false, alpha: false, preserveDrawingBuffer: false });
    if (!gl) throw new Error("WebGL2 is not available in this browser");
    // Put together by engine/visual/sky.py from shaders/ with the "#version 300 es" header.
    const [vert, frag] = await Promise.all(["shaders/webgl/sky.vert", "shaders/webgl/sky.frag"].map(text));
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, vert, "sky.vert"));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, frag, "sky.frag"));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`sky: ${gl.getProgramInfoLog(program)}`);
    return new Sky(canvas, gl, program, settings, clock);
  }

  constructor(canvas, gl, program, settings, clock) {
    Object.assign(this, { canvas, gl, program, clock });
    this.sky = { ...(settings.sky || {}) };
    if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) this.sky.spin = 0;
    this.glide = Math.max(0.05, settings.glide ?? 2);
    this.frames = 0;
    this.lastDraw = 0;
    this.mixFrom = -1e9;  // time (ms) the current crossfade started
    this.hasImage = false;
    this.vao = gl.createVertexArray();
    this.u = {};
    const n = gl.getProgramParameter(program, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < n; i++) {
      const name = gl.getActiveUniform(program, i).name;
      this.u[name] = gl.getUniformLocation(program, name);
    }
    // Two textures, made once: `front` holds the newest image, the other the previous one.
    this.textures = [0, 1].map(() => {
      const t = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, 1, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array([0, 0, 0, 255]));
      for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
        [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_2D, k, v);
      return t;
    });
    this.front = 0;
    this.loop = this.loop.bind(this);
    requestAnimationFrame(this.loop);
  }

  /** Crossfade to a new image (ImageBitmap or HTMLImageElement) over `glide` seconds. */
  setImage(image) {
    const gl = this.gl;
    this.front = 1 - this.front;
    gl.bindTexture(gl.TEXTURE_2D, this.textures[this.front]);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, image);
    this.mixFrom = this.hasImage ? performance.now() : -1e9;
    this.hasImage = true;
  }

  resize() {
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    return [w, h];
  }

  loop(now) {
    requestAnimationFrame(this.loop);
    if (now - this.lastDraw < FRAME_MS - 1) return;
    this.lastDraw = now;
    this.draw(now);
  }

  draw(now) {
    const gl = this.gl, u = this.u, s = this.sky;
    const [w, h] = this.resize();
    const lay = layout(w, h);
    const t = this.clock();  // server time, seconds: every visitor sees the sky turned the same way
    const lon = ((s.lon ?? 0) + (s.spin ?? 0) * (t % 86400)) * DEG;
    const bg = s.background || [0, 0, 0];
    gl.viewport(0, 0, w, h);
    gl.useProgram(this.program);
    gl.bindVertexArray(this.vao);
    const back = 1 - this.front;
    [["uImageA0", back], ["uImageA1", this.front], ["uImageB0", back], ["uImageB1", this.front]].forEach(([name, tex], unit) => {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, this.textures[tex]);
      if (u[name]) gl.uniform1i(u[name], unit);
    });
    const mix = Math.min(1, Math.max(0, (now - this.mixFrom) / (this.glide * 1000)));
    const set = (name, fn, ...v) => { if (u[name]) gl[fn](u[name], ...v); };
    set("uCentre", "uniform2f", lay.cx, lay.cy);
    set("uScale", "uniform1f", lay.scale);
    set("uProjection", "uniform1i", Math.round(s.projection ?? 0));
    set("uMapping", "uniform1i", Math.round(s.mapping ?? 0));
    set("uRotation", "uniformMatrix3fv", false, rotation(lon, (s.lat ?? 0) * DEG, (s.roll ?? 0) * DEG));
    set("uMix", "uniform1f", mix);
    set("uGraticule", "uniform1f", s.graticule ?? 0.25);
    set("uSpacing", "uniform1f", (s.spacing ?? 30) * DEG);
    set("uColormap", "uniform1i", Math.round(s.colormap ?? 0));
    set("uGrain", "uniform1f", s.grain ?? 0);
    set("uDissolve", "uniform1f", s.dissolve ?? 0);
    set("uBrightness", "uniform1f", s.brightness ?? 1);
    set("uFade", "uniform1f", this.hasImage ? 1 : 0);
    set("uBackground", "uniform3f", bg[0], bg[1], bg[2]);
    set("uNote", "uniform4f", 0, 0, 0, 0);  // the grey circle is an HTML button over the canvas
    set("uFrame", "uniform1i", this.frames++);
    set("uLayer", "uniform1i", 0);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    this.layout = { ...lay, width: w, height: h };
  }
}
