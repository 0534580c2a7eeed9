"""The `[visual]` section of a patch."""

from __future__ import annotations

from dataclasses import dataclass

from ..configio import field


@dataclass(frozen=True)
class VisualConfig:
    """Window and generator settings."""

    model: str = field("models/image-default", doc="Folder with model.safetensors and card.toml.")
    width: int = field(1280, minimum=64, maximum=8192, doc="Window width in pixels.")
    height: int = field(720, minimum=64, maximum=8192, doc="Window height in pixels.")
    fullscreen: bool = field(False, doc="Fullscreen on `display`, cursor hidden.")
    display: int = field(0, minimum=0, maximum=16, doc="Display index for fullscreen.")
    vsync: bool = field(True, doc="Wait for vertical sync.")
    fps: float = field(60.0, minimum=1.0, maximum=240.0, doc="Frame rate cap.")
    keyframes_per_s: float = field(12.0, minimum=0.1, maximum=120.0, doc="Generator keyframes per second.")
    compile: bool = field(True, doc="torch.compile (inductor, frozen) a generator slower than 20 ms per "
                                    "picture; eager if compiling fails.")
    threads: int = field(1, minimum=1, maximum=64, doc="Torch threads of the generator process.")
    seed: int = field(0, minimum=0, doc="Seed of the image latent walk (0 = from the clock).")
    render_scale: float = field(0.0, minimum=0.0, maximum=1.0,
                                doc="Fraction of the window resolution the sky is computed at, then upscaled "
                                    "(the oval edge and the note stay sharp). 0 = auto: on a GPU 1; on a software "
                                    "renderer (llvmpipe) 1 up to 1920x1080, above that about the keyframes' own "
                                    "resolution.")
    ndi: str = field("", doc="Send the sky as an NDI source of this name (empty: off); with --headless it is drawn "
                             "offscreen at width x height. Needs the `ndi` extra (ndi-python).")
    screenshots: str = field("screenshots", doc="Folder for screenshots (S or F12 in the window).")
