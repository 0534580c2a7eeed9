// Web Audio playback of the scenes: one looping buffer per scene, crossfaded, through a master
// volume and a limiter. Never louder than the file: every gain is <= 1, and the trim after the
// DynamicsCompressor undoes the makeup gain the Web Audio spec adds to it.

const FADE_S = 1.5;      // crossfade between scenes
const START_S = 3.0;     // gentle fade-in after pressing start
const LIMIT_DB = -3;     // limiter threshold (dBFS)
const LIMIT_RATIO = 20;

export class Sound {
  /** Create the AudioContext: call from a user gesture (the start button). */
  constructor(volume) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    this.ctx = new Ctx({ latencyHint: "playback" });
    const c = this.ctx;
    this.master = c.createGain();
    this.master.gain.value = 0;
    this.limiter = c.createDynamicsCompressor();
    for (const [k, v] of [["threshold", LIMIT_DB], ["knee", 0], ["ratio", LIMIT_RATIO], ["attack", 0.002], ["release", 0.25]]) {
      this.limiter[k].value = v;
    }
    // The spec's makeup gain is (1 / gain at 0 dBFS) ^ 0.6; with a hard knee the gain at 0 dBFS is
    // LIMIT_DB * (1 - 1 / ratio) dB. The trim takes it back out.
    const makeupDb = -0.6 * LIMIT_DB * (1 - 1 / LIMIT_RATIO);
    this.trim = c.createGain();
    this.trim.gain.value = Math.pow(10, -makeupDb / 20);
    this.analyser = c.createAnalyser();
    this.analyser.fftSize = 2048;
    this.master.connect(this.limiter).connect(this.trim).connect(this.analyser).connect(c.destination);
    this.samples = new Float32Array(this.analyser.fftSize);
    this.volume = Math.min(1, Math.max(0, volume));
    this.voice = null;
    this.cache = new Map();  // url -> Promise<AudioBuffer>, the current and next scene only
    this.peakOut = 0;
  }

  async resume() {
    if (this.ctx.state !== "running") await this.ctx.resume();
    const g = this.master.gain, t = this.ctx.currentTime;
    g.cancelScheduledValues(t);
    g.setValueAtTime(g.value, t);
    g.linearRampToValueAtTime(this.volume, t + START_S);
  }

  /** A new volume (0..1) glides in at once, cutting short the start fade if it is still running. */
  setVolume(v) {
    this.volume = Math.min(1, Math.max(0, v));
    const g = this.master.gain, t = this.ctx.currentTime;
    g.cancelScheduledValues(t);
    g.setValueAtTime(g.value, t);
    g.setTargetAtTime(this.volume, t, 0.05);
  }

  /** Fetch and decode a sound (kept for the current and next scene). */
  load(url) {
    if (!this.cache.has(url)) {
      const p = fetch(url).then((r) => {
        if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
        return r.arrayBuffer();
      }).then((data) => this.ctx.decodeAudioData(data));
      p.catch(() => this.cache.delete(url));
      this.cache.set(url, p);
      while (this.cache.size > 4) this.cache.delete(this.cache.keys().next().value);
    }
    return this.cache.get(url);
  }

  /** Crossfade to `buffer`, looping, starting `offset` seconds into it (visitors stay in step). */
  play(buffer, offset) {
    const c = this.ctx, t = c.currentTime;
    const src = c.createBufferSource();
    src.buffer = buffer;
    src.loop = true;
    const gain = c.createGain();
    gain.gain.setValueAtTime(0, t);
    gain.gain.linearRampToValueAtTime(1, t + FADE_S);
    src.connect(gain).connect(this.master);
    src.start(t, ((offset % buffer.duration) + buffer.duration) % buffer.duration);
    const old = this.voice;
    if (old) {
      old.gain.gain.cancelScheduledValues(t);
      old.gain.gain.setValueAtTime(old.gain.gain.value, t);
      old.gain.gain.linearRampToValueAtTime(0, t + FADE_S);
      old.src.stop(t + FADE_S + 0.05);
    }
    this.voice = { src, gain, peak: peakOf(buffer) };
  }

  /** RMS and peak of the output over the last analyser window (for the tests and a level meter). */
  level() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0, peak = 0;
    for (const x of this.samples) { sum += x * x; peak = Math.max(peak, Math.abs(x)); }
    this.peakOut = Math.max(this.peakOut, peak);
    return { rms: Math.sqrt(sum / this.samples.length), peak, filePeak: this.voice ? this.voice.peak : 0 };
  }
}

function peakOf(buffer) {
  let peak = 0;
  for (let ch = 0; ch < buffer.numberOfChannels; ch++) {
    for (const x of buffer.getChannelData(ch)) peak = Math.max(peak, Math.abs(x));
  }
  return peak;
}
