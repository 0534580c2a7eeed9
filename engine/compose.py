"""`ciel compose OUT.wav --minutes M [--form PATCH]`: a soundscape rendered offline and mastered.

The patch's `[form]` (engine/form.py), or the built-in arc stretched over the length (noise →
babble → a clearer voice → conversation → babble → noise), drives the same `AudioSynth` as the
live engine, 20 times a second, at 44.1 kHz; the last 4 seconds fade out. Then the master,
as a composer would bounce it:

    high-pass 30 Hz · low shelf 150 Hz −1.5 dB · presence 2.5 kHz +1 dB        (pedalboard EQ)
    bus compressor −24 dB, 2:1, attack 30 ms, release 250 ms                    (pedalboard)
    gain to the loudness target (ITU-R BS.1770 integrated, pyloudnorm)
    true-peak limiter, ceiling −1.5 dBFS (engine.audio.safety: the live one)
    measured again: the gain is corrected and the limiter run again, at most 4 times, until the
    integrated loudness is within 0.5 LU of the target and the true peak (4× oversampled) ≤ −1 dBTP

Written as 24-bit WAV; beside it `OUT.arc.json` (per second: stage, `audio/learning`,
`audio/voices`, level in dBFS RMS, spectral flatness) and `OUT.arc.png`, the arc drawn. The same
patch, length and seed give the same bytes. Runs on the calling thread.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CielError
from .form import ARC_VOICES, Form, FormConfig, arc
from .patch import Patch

RATE = 44100
CONTROL_HZ = 20          # form values written this often
FADE_OUT_S = 4.0
CEILING_DB = -1.5        # the limiter's ceiling: 0.5 dB of headroom under the -1 dBTP promise
TRUE_PEAK_MAX_DB = -1.0


@dataclass(frozen=True)
class Mastered:
    """What `compose` made: integrated loudness (LUFS) and its target, true peak (dBTP), the
    passes it took, the per-second arc, and the files written."""

    loudness: float
    target: float
    true_peak_db: float
    passes: int
    seconds: float
    arc: list[dict[str, float | str]]
    files: tuple[Path, ...]


def true_peak_db(x: np.ndarray, rate: int) -> float:
    """Highest sample of x (n, C) after 4x oversampling (windowed-sinc polyphase), in dBFS."""
    from .audio.stream import Resampler

    up = Resampler(rate, 4 * rate, taps_per_phase=32, channels=x.shape[1])
    peak = 0.0
    for i in range(0, len(x), 65536):
        peak = max(peak, float(np.abs(up.process(x[i:i + 65536])).max(initial=0.0)))
    tail = up.process(np.zeros((64, x.shape[1])))
    peak = max(peak, float(np.abs(tail).max(initial=0.0)))
    return 20 * math.log10(max(peak, 1e-12))


def _limit(x: np.ndarray, rate: int) -> np.ndarray:
    from .audio.safety import TruePeakLimiter

    lim = TruePeakLimiter(rate, channels=x.shape[1])
    lim.set_ceiling(CEILING_DB)
    pad = np.zeros((lim.delay, x.shape[1]))
    out = np.concatenate([lim.process(x[i:i + 4096]) for i in range(0, len(x), 4096)] + [lim.process(pad)])
    return out[lim.delay:lim.delay + len(x)]


def master(x: np.ndarray, rate: int, target: float) -> tuple[np.ndarray, float, float, int]:
    """x (n, 2) → (mastered (n, 2) float32, integrated loudness, true peak dBTP, passes)."""
    import pedalboard
    import pyloudnorm

    chain = pedalboard.Pedalboard([
        pedalboard.HighpassFilter(cutoff_frequency_hz=30.0),
        pedalboard.LowShelfFilter(cutoff_frequency_hz=150.0, gain_db=-1.5),
        pedalboard.PeakFilter(cutoff_frequency_hz=2500.0, gain_db=1.0, q=0.7),
        pedalboard.Compressor(threshold_db=-24.0, ratio=2.0, attack_ms=30.0, release_ms=250.0),
    ])
    eq = chain(np.ascontiguousarray(x.T, np.float32), rate).T.astype(np.float64)      # (n, 2)
    meter = pyloudnorm.Meter(rate)
    measured = meter.integrated_loudness(eq)
    if not math.isfinite(measured):
        raise CielError("the composition is silent: nothing to master")
    gain_db = target - measured
    passes = 0
    while True:
        passes += 1
        out = _limit(eq * 10 ** (gain_db / 20), rate)
        loud = meter.integrated_loudness(out)
        peak = true_peak_db(out, rate)
        if (abs(loud - target) <= 0.5 and peak <= TRUE_PEAK_MAX_DB) or passes == 4:
            break
        gain_db += target - loud
    return out.astype(np.float32), float(loud), float(peak), passes


def flatness(x: np.ndarray, rate: int = RATE, band: tuple[float, float] = (100.0, 7000.0)) -> float:
    """Spectral flatness (geometric / arithmetic mean of the power spectrum, 0..1) of mono x over
    `band` (Hz): the decoders' own band (16 kHz models hold nothing above 8 kHz). Noise is near 1,
    a voice with harmonics and formants far below."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / rate)
    spec = spec[(f >= band[0]) & (f <= band[1])] + 1e-20
    return float(np.exp(np.mean(np.log(spec))) / np.mean(spec))


def render(patch: Patch, form: FormConfig, seconds: float, seed: int, progress=None) -> tuple[np.ndarray, list[dict]]:
    """The unmastered sound (n, 2) at RATE and the control values per second."""
    from .audio.model import load_audio_model
    from .audio.stream import AudioSynth
    from .broadcast.source import patch_values
    from .params import REGISTRY

    player = Form(form, start={**patch.params, **form.stages[0].params})   # it begins in its first stage
    wanted = int(form.most("audio/voices", max(patch.audio.voices, 1)))
    synth = AudioSynth(load_audio_model(patch.audio.model, patch.audio.trust), RATE, seed=seed, fade_in_s=1.0, voices=min(wanted, 16))
    values = patch_values(patch)
    total = int(round(seconds * RATE))
    block = RATE // CONTROL_HZ
    out = np.zeros((total, 2), np.float32)
    controls: list[dict] = []
    for start in range(0, total, block):
        t = start / RATE
        current = player.values_at(t)
        for name, value in current.items():
            values[REGISTRY.slot(name)] = value
        if start % RATE == 0:
            i, _ = player.stage_at(t)
            controls.append({"t": t, "stage": form.stages[i].name,
                             "learning": float(values[REGISTRY.index("audio/learning")]),
                             "voices": min(float(values[REGISTRY.index("audio/voices")]), synth.slots + 1.0)})
        n = min(block, total - start)
        out[start:start + n] = synth.process(values, n)
        if progress is not None:
            progress(start + n, total)
    fade = min(int(FADE_OUT_S * RATE), total)
    out[total - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None] ** 2
    return out, controls


def arc_rows(sound: np.ndarray, controls: list[dict]) -> list[dict[str, float | str]]:
    """Per second: the controls, the level (dBFS RMS) and spectral flatness of the mastered sound."""
    rows = []
    for c in controls:
        a = int(c["t"] * RATE)
        mono = sound[a:a + RATE].mean(axis=1).astype(np.float64)
        if len(mono) < RATE // 2:
            continue
        level = 10 * math.log10(float(np.mean(mono ** 2)) + 1e-12)
        rows.append({**c, "level_db": round(level, 2), "flatness": round(flatness(mono), 4)})
    return rows


def plot_arc(rows: list[dict[str, float | str]], path: Path, title: str) -> None:
    """The arc as a PNG: level, learning, voices and flatness over time, stages marked."""
    from PIL import Image, ImageDraw

    w, h, left, top = 1200, 640, 90, 40
    panels = (("level (dBFS RMS)", "level_db", -60.0, 0.0), ("audio/learning", "learning", 0.0, 1.0),
              ("audio/voices", "voices", 0.0, 16.0), ("spectral flatness", "flatness", 0.0, 0.1))
    img = Image.new("RGB", (w, h), (250, 250, 247))
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill=(0, 0, 0))
    ph = (h - top - 30) // len(panels)
    span = max(float(rows[-1]["t"]), 1.0) if rows else 1.0
    x_of = lambda t: left + (w - left - 20) * float(t) / span   # noqa: E731 — a local scale
    for k, (label, key, lo, hi) in enumerate(panels):
        y0 = top + k * ph
        d.rectangle((left, y0, w - 20, y0 + ph - 12), outline=(160, 160, 160))
        d.text((8, y0 + ph // 2 - 12), label, fill=(40, 40, 40))
        d.text((left - 30, y0), f"{hi:g}", fill=(120, 120, 120))
        d.text((left - 30, y0 + ph - 24), f"{lo:g}", fill=(120, 120, 120))
        pts = [(x_of(r["t"]), y0 + (ph - 12) * (1 - (min(max(float(r[key]), lo), hi) - lo) / (hi - lo))) for r in rows]
        if len(pts) > 1:
            d.line(pts, fill=(30, 60, 150), width=2)
    last = None
    for r in rows:
        if r["stage"] != last:
            x = x_of(r["t"])
            d.line((x, top, x, h - 30), fill=(200, 120, 60))
            d.text((x + 3, h - 26), str(r["stage"]), fill=(150, 80, 30))
            last = r["stage"]
    img.save(path)


def compose(patch: Patch, out: Path, minutes: float, seed: int, target: float, progress=None) -> Mastered:
    """Render, master and write `out` (+ .arc.json, .arc.png); see the module."""
    import soundfile as sf

    from .configio import atomic_write

    seconds = minutes * 60.0
    form = patch.form if patch.form.stages else arc(seconds)
    raw, controls = render(patch, form, seconds, seed, progress)
    sound, loud, peak, passes = master(raw, RATE, target)
    rows = arc_rows(sound, controls)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sf.write(tmp, sound, RATE, subtype="PCM_24", format="WAV")
    tmp.replace(out)
    arc_json = out.with_suffix(".arc.json")
    atomic_write(arc_json, json.dumps({"loudness": round(loud, 2), "target": target, "true_peak_db": round(peak, 2),
                                       "seed": seed, "seconds": seconds, "per_second": rows}, indent=1))
    arc_png = out.with_suffix(".arc.png")
    plot_arc(rows, arc_png, f"{out.name}: {minutes:g} min, seed {seed}, {loud:.1f} LUFS (target {target:g}), "
                            f"true peak {peak:.1f} dBTP")
    return Mastered(loud, target, peak, passes, seconds, rows, (out, arc_json, arc_png))


def cmd_compose(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .commands import patch_for_model, setup_logging

    setup_logging("warning")
    if not 0.1 <= args.minutes <= 600:
        raise CielError(f"--minutes: expected 0.1 to 600, got {args.minutes:g}")
    patch = patch_for_model(args.form, args)
    bar = tqdm(total=int(args.minutes * 60 * RATE), unit="sample", unit_scale=True, desc="compose", leave=False)
    try:
        made = compose(patch, args.out, args.minutes, args.seed, args.loudness,
                       progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    if abs(made.loudness - made.target) > 1.0 or made.true_peak_db > TRUE_PEAK_MAX_DB:
        print(f"ciel: warning: the master missed its promise after {made.passes} passes (loudness within 1 LU, "
              f"true peak at most {TRUE_PEAK_MAX_DB:g} dBTP): a target this loud needs more limiting than the "
              f"ceiling allows; try a lower --loudness", file=sys.stderr)
    print(f"ciel: composed {args.minutes:g} min into {args.out}: integrated loudness {made.loudness:.2f} LUFS "
          f"(target {made.target:g}), true peak {made.true_peak_db:.2f} dBTP, {made.passes} mastering pass(es); "
          f"the arc: {made.files[2]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `compose` to the `ciel` parser."""
    from .commands import add_model_args

    p = sub.add_parser("compose", help="render a mastered soundscape offline along the patch's form (or the built-in arc)")
    p.add_argument("out", type=Path, help="output WAV (24-bit, 44.1 kHz); the arc beside it (.arc.json, .arc.png)")
    p.add_argument("--minutes", type=float, default=5.0, help="length (default 5)")
    p.add_argument("--form", type=Path, default=None,
                   help="patch with a [form] (and its models and parameters); default: the default patch and the built-in arc")
    p.add_argument("--seed", type=int, default=1, help="seed of the walks and the cloud (same seed, same bytes)")
    p.add_argument("--loudness", type=float, default=-16.0, help="integrated loudness target, LUFS (default -16)")
    add_model_args(p)
    p.set_defaults(func=cmd_compose)


__all__ = ["ARC_VOICES", "Mastered", "compose", "flatness", "master", "register", "true_peak_db"]
