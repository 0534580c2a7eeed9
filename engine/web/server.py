"""The broadcast's state: one scene clock for every visitor, the scenes' files, and the page.

`SceneClock`: scene id = floor((now - epoch) / period). `Broadcast` prepares the scenes ahead of
the clock on its own threads and keeps the current scene's JSON; every answer carries the server
time and the time to the next scene, so pages switch together and prefetch the next scene.
`load_files` reads the page, its static files and the shaders once. The live server that answers
visitors is engine/web/live.py (uvicorn); `ciel broadcast --export` writes the same page and files
as a static site (engine/broadcast/export.py). Neither makes requests itself, and the page makes
none to other hosts (CSP 'self').
"""

from __future__ import annotations

import html
import json
import logging
import math
import mimetypes
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..configio import ROOT
from ..errors import CielError, ConfigError
from .media import Media, MediaStore

log = logging.getLogger("ciel.web")

STATIC = Path(__file__).resolve().parent / "static"
SHADERS = ROOT / "shaders"
SHADER_SUFFIXES = (".glsl", ".vert", ".frag")
HEARTBEAT_S = 15.0
RETRY_MS = 2000
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True)
class SceneMedia:
    """The files of one scene. `name` says where it came from (baked file stem or seed)."""

    name: str
    sound: Media
    image: Media
    sound_fallback: Media | None = None  # MP3 for browsers without Ogg Opus (Safari before 17)

    def table(self) -> dict:
        out = {"name": self.name, "sound": self.sound.url, "sound_type": self.sound.ctype,
               "image": self.image.url}
        if self.sound_fallback is not None:
            out["sound_fallback"] = self.sound_fallback.url
        return out


class SceneSource(Protocol):
    """Where scenes come from (a baked folder or live generation)."""

    def prepare(self, scene_id: int) -> SceneMedia:
        """Make (or read) scene `scene_id`; may take seconds. Called from the preparer thread."""
        ...


@dataclass(frozen=True)
class SceneClock:
    """Scene ids from wall-clock time: id = floor((now - epoch) / period). `now` is injected."""

    period: float
    epoch: float = 0.0
    now: Callable[[], float] = time.time

    def id_at(self, t: float) -> int:
        return math.floor((t - self.epoch) / self.period)

    def start_of(self, scene_id: int) -> float:
        return self.epoch + scene_id * self.period


class Broadcast:
    """The shared state: prepared scenes, the current scene's JSON, and the SSE condition.

    Two threads run it: the ticker publishes the current scene at every boundary (and when a late
    scene becomes ready); the preparer makes the scenes `ahead` of the clock. If a scene is not
    ready at its time, the newest ready one is held (`"held": true`) rather than showing nothing.
    """

    def __init__(self, source: SceneSource, clock: SceneClock, ahead: int = 2) -> None:
        self.source, self.clock, self.ahead = source, clock, ahead
        self.store = MediaStore(max_items=6 * (ahead + 3))
        self._scenes: dict[int, SceneMedia] = {}
        self._failed: set[int] = set()
        self._last_error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.current_id = -1
        self._key: tuple[int, bool, bool] = (-1, False, False)
        self._static = b'{"id":null}'
        self.etag = '""'
        self.version = 0
        self.prepare_errors = 0
        self._watchers: list[Callable[[], None]] = []

    # -- threads -------------------------------------------------------------------------
    def start(self, wait_first: float = 120.0, with_next: bool = True) -> None:
        """Prepare the current scene (retrying up to `wait_first` s) and, `with_next`, the next one
        (so the first answers already announce it), then start both threads."""
        now_id = self.clock.id_at(self.clock.now())
        deadline = time.monotonic() + wait_first
        while not self._prepare(now_id, retry=True):
            if time.monotonic() > deadline:
                exc = self._last_error
                if isinstance(exc, CielError):
                    raise exc
                raise ConfigError("broadcast", "", f"the first scene could not be prepared: {exc}")
            time.sleep(0.5)
        if with_next:
            self._prepare(now_id + 1)
        self.publish()
        for target in (self._ticker, self._preparer):
            t = threading.Thread(target=target, name=f"ciel-web-{target.__name__.strip('_')}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _prepare(self, scene_id: int, retry: bool = False) -> bool:
        """Make scene `scene_id` ready; False if it failed (then, unless `retry`, it is not tried again)."""
        if scene_id in self._scenes:
            return True
        if scene_id in self._failed and not retry:
            return False
        try:
            scene = self.source.prepare(scene_id)
        except Exception as exc:  # noqa: BLE001 — a bad file or a generator failure becomes data: logged once, scene held
            self.prepare_errors += 1
            self._last_error = exc
            if scene_id not in self._failed:
                log.error("scene %d could not be prepared (the previous one is held): %s", scene_id, exc)
            self._failed.add(scene_id)
            return False
        for media in (scene.sound, scene.image, scene.sound_fallback):
            if media is not None:
                self.store.put(media)
        with self._cond:
            self._scenes[scene_id] = scene
            for old in [k for k in self._scenes if k < scene_id - self.ahead - 2]:
                del self._scenes[old]
        self._failed = {k for k in self._failed if k >= scene_id - self.ahead - 2}
        return True

    def _preparer(self) -> None:
        while not self._stop.is_set():
            now_id = self.clock.id_at(self.clock.now())
            for sid in range(now_id, now_id + self.ahead + 1):
                if self._stop.is_set():
                    return
                if self._prepare(sid):
                    self.publish()  # a late scene shows at once; a new `next` is announced
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def _ticker(self) -> None:
        while not self._stop.is_set():
            now = self.clock.now()
            nxt = self.clock.start_of(self.clock.id_at(now) + 1)
            if self._stop.wait(timeout=max(0.0, min(nxt - now, 1.0)) + 0.001):
                return
            if self.clock.id_at(self.clock.now()) != self.clock.id_at(now):
                self._wake.set()
                self.publish()

    # -- state -----------------------------------------------------------------------------
    def publish(self) -> None:
        """Rebuild the cached JSON for the current scene and wake every SSE stream."""
        now_id = self.clock.id_at(self.clock.now())
        with self._cond:
            shown = max((k for k in self._scenes if k <= now_id), default=None)
            if shown is None:
                return
            held = shown != now_id
            nxt = self._scenes.get(now_id + 1)
            key = (now_id, held, nxt is not None)
            if key == self._key:
                return
            body = {"id": now_id, "period": self.clock.period, "held": held,
                    "starts_at": round(self.clock.start_of(now_id), 3),
                    "ends_at": round(self.clock.start_of(now_id + 1), 3),
                    **self._scenes[shown].table(),
                    "next": None if nxt is None else {"id": now_id + 1, **nxt.table()}}
            self._static = json.dumps(body, separators=(",", ":")).encode()
            self.current_id, self._key = now_id, key
            self.etag = f'"s{now_id}{"h" if held else ""}{"n" if nxt else ""}"'
            self.version += 1
            self._cond.notify_all()
            watchers = tuple(self._watchers)
        for fn in watchers:
            fn()

    def add_watcher(self, fn: Callable[[], None]) -> None:
        """`fn()` after every change of the current scene, on the thread that published it (the
        live server hands it to its event loop)."""
        with self._cond:
            self._watchers.append(fn)

    def remove_watcher(self, fn: Callable[[], None]) -> None:
        with self._cond:
            if fn in self._watchers:
                self._watchers.remove(fn)

    def scene_json(self) -> tuple[str, bytes, float]:
        """(etag, body, time_to_next) of the current scene; the time fields are added per call."""
        now = self.clock.now()
        with self._cond:
            static, etag, sid = self._static, self.etag, self.current_id
        ttn = max(0.0, self.clock.start_of(sid + 1) - now)
        return etag, static[:-1] + b',"server_time":%.3f,"time_to_next":%.3f}' % (now, ttn), ttn

    def events(self) -> Iterator[bytes | None]:
        """Yield a scene event now and at every change; None every HEARTBEAT_S (send a comment)."""
        seen = -1
        while not self._stop.is_set():
            with self._cond:
                if self.version == seen:
                    self._cond.wait(timeout=HEARTBEAT_S)
                version = self.version
            if self._stop.is_set():
                return
            if version == seen:
                yield None
                continue
            seen = version
            yield self.scene_json()[1]


def load_files(note: str, settings: Mapping[str, object]) -> dict[str, Media]:
    """The page, its static files and the shaders, read once: {url path: Media}.

    index.html gets the program note (paragraphs, HTML-escaped) at `<!--NOTE-->` and the page
    settings (volume, sky look) as a JSON data block at `<!--SETTINGS-->`.
    """
    blob = json.dumps(dict(settings), separators=(",", ":")).replace("</", "<\\/")
    settings_tag = f'<script id="ciel-settings" type="application/json">{blob}</script>'.encode()
    files: dict[str, Media] = {}
    for p in sorted(STATIC.iterdir()) if STATIC.is_dir() else []:
        if p.is_file() and not p.name.startswith("."):
            data = p.read_bytes()
            if p.name == "index.html":
                paras = "".join(f"<p>{html.escape(s)}</p>" for s in re.split(r"\n\s*\n", note.strip()) if s)
                data = data.replace(b"<!--NOTE-->", paras.encode()).replace(b"<!--SETTINGS-->", settings_tag)
                files["/"] = Media.of(data, "text/html; charset=utf-8", "html")
            else:
                ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                is_text = ctype.startswith("text/") or "javascript" in ctype
                files[f"/static/{p.name}"] = Media.of(data, ctype + ("; charset=utf-8" if is_text else ""), p.suffix[1:])
    for p in sorted(SHADERS.iterdir()) if SHADERS.is_dir() else []:
        if p.suffix in SHADER_SUFFIXES and p.is_file():
            files[f"/shaders/{p.name}"] = Media.of(p.read_bytes(), "text/plain; charset=utf-8", p.suffix[1:])
    # The programs as WebGL2 compiles them, put together by the same code as the window's.
    from ..visual.sky import WEBGL_HEADER, fragment_source, vertex_source

    try:
        programs = {"sky.vert": vertex_source(WEBGL_HEADER), "sky.frag": fragment_source("sky.frag", WEBGL_HEADER)}
    except OSError as exc:
        log.error("the page cannot draw the sky: %s", exc)
        programs = {}
    for name, text in programs.items():
        files[f"/shaders/webgl/{name}"] = Media.of(text.encode(), "text/plain; charset=utf-8", "glsl")
    return files
