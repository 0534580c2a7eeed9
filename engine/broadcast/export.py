"""`ciel broadcast --export DIR`: the broadcast as a static site that any web server or CDN can host.

    DIR/index.html            the page (program note and settings filled in, `"static": true`)
    DIR/static/*.js, *.css    the page's code, as the live server sends it
    DIR/shaders/…             the GLSL files, and shaders/webgl/sky.vert|frag put together for WebGL2
    DIR/media/HASH.EXT        every scene's sound (Ogg Opus, MP3 fallback) and image, content-addressed
    DIR/manifest.json         {"epoch", "period", "scenes": [{name, sound, sound_type, image, …}]}

There is no server logic: the page reads manifest.json once and computes the current scene from
the clock, scene id = floor((now - epoch) / period), cycling through the exported scenes, so every
visitor sees the same scene at the same time from any static host. Media never change under their
names (cache them for ever); index.html, static/ and manifest.json change with a new export.
Every file is written atomically; a folder exported again is brought up to date in place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..configio import atomic_write
from ..web.server import SceneSource, load_files

MANIFEST = "manifest.json"


def export_static(folder: Path, source: SceneSource, scenes: int, period: float, epoch: float, note: str,
                  settings: Mapping[str, object]) -> int:
    """Write the static site for `scenes` scenes of `source` (ids 0..scenes-1) into `folder`.
    Returns the number of scenes written. Main thread; preparing live scenes takes seconds each."""
    files = load_files(note, {**settings, "static": True})
    for path, media in files.items():
        atomic_write(folder / ("index.html" if path == "/" else path.lstrip("/")), media.data)
    tables = []
    for scene_id in range(scenes):
        made = source.prepare(scene_id)
        for media in [m for m in (made.sound, made.image, made.sound_fallback) if m is not None]:
            target = folder / media.url.lstrip("/")
            if not target.exists():   # content-addressed: the same name is the same bytes
                atomic_write(target, media.data)
        tables.append({k: (v.lstrip("/") if isinstance(v, str) and v.startswith("/media/") else v)
                       for k, v in made.table().items()})
    manifest = {"epoch": epoch, "period": period, "scenes": tables}
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return len(tables)
