"""Scenes: one short sound and one image made from a seed, and the baked folder that holds them.

A scene is what the installation shows for one period: a sound decoded by the audio VAE along a
latent walk that starts from the seed, and one square GAN image from the seed's image latent (the
oval projection is applied at display time, so a baked image can be shown by any renderer).

The baked folder's format (index.json and the files it names) is engine/baked.py.

Called from the main thread (`ciel bake`) or the scheduler's listeners; nothing here is real-time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .baked import INDEX, read_index, write_index
from .errors import ConfigError
from .mediaio import encode_audio
from .params import REGISTRY, Registry, check_view
from .paramview import ParamView
from .parts import Keyframe

OPUS_RATE = 48000
MAX_BAKED_PIXELS = 64_000_000   # a baked scene image is about 1 megapixel; far larger is a bad file, not a scene


# — making —
def image_latent(seed: int, latent_dim: int, values: np.ndarray, registry: Registry = REGISTRY) -> np.ndarray:
    """The image latent of a scene: N(0, 1) from `seed`, scaled by image/temperature, plus the
    image/offset knobs on the first dimensions. Shape (latent_dim,), float32."""
    check_view(registry)
    p = ParamView(values)
    z = np.random.default_rng(seed).standard_normal(latent_dim)  # (latent_dim,)
    z *= p.image_temperature
    off = p.image_offset
    n = min(len(off), latent_dim)
    z[:n] += off[:n]
    return z.astype(np.float32)


def render_image(model, seed: int, values: np.ndarray) -> np.ndarray:
    """One square image (R, R, 3) uint8 from the generator `model` (engine.visual.model.ImageModel)."""
    import torch

    z = torch.from_numpy(image_latent(seed, model.latent_dim, values))[None]
    img = model.generate(z)[0].detach().float().clamp(-1.0, 1.0)
    return ((img.permute(1, 2, 0).numpy() + 1.0) * 127.5 + 0.5).astype(np.uint8)


def render_sound(audio_model, seed: int, values: np.ndarray, seconds: float, rate: int = OPUS_RATE,
                 block: int = 1024, voices: int = 1) -> np.ndarray:
    """`seconds` of sound (frames, 2) float32 from the audio model, on a latent walk seeded by `seed`,
    through the same synthesis and safety stage as live playback (engine.audio.stream.AudioSynth,
    with `voices` decoder voices made ready: the patch's [audio] voices)."""
    from .audio.stream import AudioSynth

    synth = AudioSynth(audio_model, rate, seed=seed, voices=voices)
    total = int(round(seconds * rate))
    out = np.zeros((total, 2), dtype=np.float32)
    done = 0
    while done < total:
        n = min(block, total - done)
        out[done:done + n] = synth.process(values, n)
        done += n
    fade = min(total // 2, int(0.05 * rate))  # 50 ms in and out, so scenes join without clicks
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)[:, None]
        out[:fade] *= ramp
        out[total - fade:] *= ramp[::-1]
    return out


def write_opus(path: Path, audio: np.ndarray, rate: int = OPUS_RATE, bitrate: int = 96000) -> None:
    """Write (frames, 2) float32 audio as Ogg Opus at 48 kHz (resampled by the encoder if needed), atomically."""
    data = encode_audio(audio.T, rate, "ogg", "libopus", out_rate=OPUS_RATE, bit_rate=bitrate)  # audio.T: (2, frames)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_scene_files(folder: Path, sid: str, audio: np.ndarray, image: np.ndarray, rate: int,
                      wav: bool = True) -> dict[str, str]:
    """Write one scene's files (Opus, optional WAV, PNG); returns the index entry's file names."""
    import soundfile as sf
    from PIL import Image

    names = {"audio": f"{sid}.ogg", "image": f"{sid}.png"}
    write_opus(folder / names["audio"], audio, rate)
    if wav:
        names["wav"] = f"{sid}.wav"
        tmp = folder / f".{sid}.wav.tmp"
        sf.write(tmp, audio, rate, subtype="PCM_16", format="WAV")
        tmp.replace(folder / names["wav"])
    tmp = folder / f".{sid}.png.tmp"
    Image.fromarray(image, "RGB").save(tmp, format="PNG")
    tmp.replace(folder / names["image"])
    return names


def bake(folder: str | Path, count: int, audio_model, image_model, values: np.ndarray, seconds: float = 8.0,
         seed: int = 1, rate: int = OPUS_RATE, wav: bool = True,
         progress: Callable[[int, int], None] | None = None, name: str = "ciel", voices: int = 1) -> Path:
    """Render `count` scenes into `folder` and write its index; returns the index path.

    Scene seeds come from `seed` (same seed, same scenes). Scenes already listed in an existing
    index with the same seeds are kept, so an interrupted bake resumes where it stopped.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in np.random.default_rng(seed).integers(1, 2**31 - 1, size=count)]
    done: dict[int, dict] = {}
    try:
        for e in read_index(folder):
            done[e.seed] = {"id": e.id, "seed": e.seed, "audio": e.audio.name, "image": e.image.name,
                            "seconds": e.seconds, **({"wav": e.wav.name} if e.wav else {})}
    except ConfigError:
        pass
    entries = []
    for i, s in enumerate(seeds):
        sid = f"s{i + 1:04d}"
        entry = done.get(s)
        if entry is None or entry["id"] != sid:
            sound = render_sound(audio_model, s, values, seconds, rate, voices=voices)
            picture = render_image(image_model, s, values)
            entry = {"id": sid, "seed": s, "seconds": seconds,
                     **write_scene_files(folder, sid, sound, picture, rate, wav)}
        entries.append(entry)
        write_index(folder, entries, name, rate, image_model.resolution)
        if progress is not None:
            progress(i + 1, count)
    return folder / INDEX


class BakedImageWorker:
    """Shows the images of baked scenes in place of the GAN worker (weak hardware).

    A `KeyframeSource` (engine/parts.py) like engine.visual.worker.GanWorker, so the render loop
    needs no other change. Fed by the scheduler: each scene
    with an `image` is read (Pillow) on the thread that fires the scene (the scheduler's timer or
    the main thread's tick), never in the render loop's `latest()`. `back` is the previous image (the
    two-hemisphere mapping turns from one to the next).
    """

    def __init__(self, scheduler) -> None:
        self.count = 0
        self.error: str | None = None
        self.times_ms: list[float] = []
        self._latest: Keyframe | None = None
        self._taken = 0
        self._front: np.ndarray | None = None
        scheduler.add_listener(self._on_scene)
        if scheduler.scene is not None:
            self._on_scene(scheduler.scene)

    def _on_scene(self, scene) -> None:
        from PIL import Image, UnidentifiedImageError

        if getattr(scene, "image", None) is None:
            return
        t0 = time.perf_counter()
        try:
            with Image.open(scene.image) as im:
                w, h = im.size
                if w * h > MAX_BAKED_PIXELS:
                    self.error = (f"baked image {scene.image}: {w}x{h} pixels is more than a baked scene holds "
                                  f"({MAX_BAKED_PIXELS // 1_000_000} megapixels at most); the last picture stays")
                    return
                image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # a truncated or malformed file: Pillow raises any of these; the last picture stays
            self.error = f"baked image {scene.image}: {exc}"
            return
        self.error = None
        back, self._front = self._front, image
        self.count += 1
        ms = 1000.0 * (time.perf_counter() - t0)
        self.times_ms.append(ms)
        del self.times_ms[:-512]
        self._latest = Keyframe(image=image, seq=self.count,
                                      back=back if back is not None and back.shape == image.shape else None)

    def start(self) -> None:
        """Nothing to start: images arrive with the scenes."""

    def is_alive(self) -> bool:
        return True

    def latest(self):
        kf = self._latest
        if kf is None or kf.seq == self._taken:
            return None
        self._taken = kf.seq
        return kf

    def stop(self, timeout: float = 0.0) -> None:
        """Nothing to stop."""
