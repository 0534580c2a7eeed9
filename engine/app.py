"""The running engine: builds and owns every part of a live ciel in the main process.

Construction order is chosen for time-to-first-sound: the audio process is spawned first (it loads
its own model and opens PortAudio while the main process builds the window and the generator).
Control parts (OSC, OSCQuery, MIDI, scheduler, /healthz) run on their own threads and only write
into the `ParamStore`; the main thread calls `tick()` once per frame for everything that must be
polled. A part that fails becomes a message (logged once, shown on the overlay) and the show goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .configio import ROOT
from .errors import CielError, ModelError
from .modulate import ListenPump, Modulation
from .params import REGISTRY, ParamStore, Registry, SharedSnapshot
from .patch import Patch

if TYPE_CHECKING:
    from .audio.model import AudioModel
    from .audio.output import AudioProcess
    from .control.midi import MidiControl
    from .control.osc import OscServer
    from .control.oscquery import OscQueryServer
    from .control.scheduler import Scene, Scheduler
    from .form import Form
    from .parts import ControlSurface, KeyframeSource
    from .supervise import Supervision
    from .visual.display import Opened
    from .visual.memory import PictureMemory
    from .visual.model import ImageModel
    from .visual.window import FrameSink, WindowHooks, WindowReport

log = logging.getLogger("ciel")

DEFAULT_AUDIO_MODEL = ROOT / "models" / "audio-default"
DEFAULT_IMAGE_MODEL = ROOT / "models" / "image-default"


@dataclass(frozen=True)
class RunOptions:
    """What `ciel run` asked for beyond the patch."""

    audio: bool = True          # False: --audio none
    window: bool = True         # False: --headless
    control: bool = True        # OSC, OSCQuery, MIDI
    installation: bool = False  # scheduler on, fullscreen, health endpoint, systemd notify
    state_dir: Path | None = None  # where an installation keeps what outlives a restart (the last picture)
    share_audio: bool = False   # the audio process's output readable here (NDI's sound: AudioProcess.output_tap)
    offscreen: bool = False     # no window, but the sky drawn offscreen for a frame sink (--headless --ndi)
    t0: float = dataclasses.field(default_factory=time.monotonic)  # when the command started


def apply_patch_params(store: ParamStore, patch: Patch, source: str = "patch") -> None:
    """Set every parameter a patch names (values were validated when the patch was loaded)."""
    for name, value in patch.params.items():
        store.set(name, value, source)


def checked_model(kind: Literal["audio", "image"], patch: Patch,
                  report: Callable[[str, str], None]) -> tuple[Patch, AudioModel | ImageModel]:
    """`(patch, model)`: the `kind` model loaded in the main process, or, if it cannot be loaded,
    the bundled default with the patch changed to name it (the swap is reported, so an
    installation still starts). A broken default raises `ModelError`."""
    from .audio.model import load_audio_model
    from .visual.model import load_image_model

    def load(folder: str | Path) -> AudioModel | ImageModel:
        return load_audio_model(folder, patch.audio.trust) if kind == "audio" else load_image_model(folder)

    folder, default = ((patch.audio.model, DEFAULT_AUDIO_MODEL) if kind == "audio"
                       else (patch.visual.model, DEFAULT_IMAGE_MODEL))
    try:
        return patch, load(folder)
    except ModelError as exc:
        if Path(folder).resolve() == default.resolve():
            raise
        report(kind, f"{exc}; using the bundled default model {default}")
    if kind == "audio":
        patch = patch.replace(audio=dataclasses.replace(patch.audio, model=str(default)))
    else:
        patch = patch.replace(visual=dataclasses.replace(patch.visual, model=str(default)))
    return patch, load(default)


class Engine:
    """All live parts of ciel. See docs/architecture.md for the data flow.

    Threads: `tick`, `frame_done` and `close` are called by the main (render) thread; `report`,
    `messages` and `health` from any thread.
    """

    def __init__(self, patch: Patch, patch_path: Path | None = None, options: RunOptions = RunOptions(),
                 clock: Callable[[], float] = time.monotonic, registry: Registry = REGISTRY,
                 curtain: Callable[[], Opened] | None = None) -> None:
        """`curtain` opens the window early with a picture (engine.visual.display.raise_curtain):
        called once the audio process is spawned, before torch is imported here; `show_window`
        then runs in that window."""
        self.started = clock()
        self.clock = clock
        self.options = options
        self.registry = registry
        self.patch_path = patch_path
        self.running = True
        self._messages: dict[str, str] = {}
        self._frames = 0
        self._fps = 0.0
        self._fps_t0 = self.started
        self._fps_n = 0
        self.last_frame = 0.0
        self.first_sound_s: float | None = None
        self.snapshot = SharedSnapshot(registry.size)
        self.store = ParamStore(registry, self.snapshot)
        self.audio: AudioProcess | None = None
        self.osc: OscServer | None = None
        self.oscquery: OscQueryServer | None = None
        self.midi: MidiControl | None = None
        self.scheduler: Scheduler | None = None
        self.form: Form | None = None     # the patch's [form], played on this engine's clock
        self.modulation: Modulation | None = None   # [[mod]] routes: what ciel hears moves parameters
        self.listening: ListenPump | None = None    # listen/* from the audio process into the store
        self._sound_pending: AudioProcess | None = None   # spawned, its first sound awaited after the first frame
        self._form_last = float("-inf")
        self.healthz: Supervision | None = None
        self.image_model: ImageModel | None = None  # the generator, loaded once here for the window
        self.keyframes: KeyframeSource | None = None  # where the window's pictures come from
        self.seed = 0  # the image paths' seed (the patch's, or drawn at start)
        self.patch = patch
        self.opened: Opened | None = None   # the window the curtain opened, for show_window
        # The order makes a start (and a restart after a crash or a lost display) short: the audio
        # and generator processes are spawned before anything waits, so their imports and model
        # loads run beside the main process's own checks; only then does the engine wait for sound.
        try:
            apply_patch_params(self.store, patch)
            sound = options.audio and patch.audio.output != "none"
            if sound:
                self._spawn_audio()
            if curtain is not None:   # while the audio process starts, before torch is imported here
                self.opened = curtain()
            if sound:
                self._check_audio_model()
            if options.window or options.offscreen:
                self.patch, model = checked_model("image", self.patch, self.report)
                self.image_model = cast("ImageModel", model)   # kind "image" loads an ImageModel
            if options.installation or self.patch.schedule.enabled:
                self._start_scheduler()
            if self.patch.form.enabled:
                self._start_form()
            if self.image_model is not None:
                self.keyframes = self._keyframe_source(self.image_model)
                self.keyframes.start()
            self.modulation = Modulation(self.store, self.patch.mods, clock=self.clock)
            if self.audio is not None:
                if options.window:
                    # the window opens first and the sound is awaited after its first frame (see
                    # frame_done): a restarted installation shows its last picture sooner
                    self._sound_pending = self.audio
                else:
                    self._await_sound(self.audio)
                self.listening = ListenPump(self.audio, self.store, self.modulation).start()
            if options.control:
                self._start_control()
            if options.installation:
                self._start_supervision()
        except BaseException:
            self.close()
            raise

    # — construction —
    def _spawn_audio(self) -> None:
        """Spawn the audio process with the patch's model (it starts beside what follows)."""
        from .audio.output import AudioProcess

        self.audio = AudioProcess(self.patch.audio, self.snapshot.name, share_output=self.options.share_audio)
        self.audio.begin()

    def _check_audio_model(self) -> None:
        """Check the patch's audio model here: if it cannot be loaded, the audio process is
        replaced by one playing the bundled default (reported)."""
        checked, _ = checked_model("audio", self.patch, self.report)
        if checked is not self.patch:
            if self.audio is not None:
                self.audio.stop()
            self.patch = checked
            self._spawn_audio()

    def _await_sound(self, audio: AudioProcess) -> None:
        """Wait for the audio process spawned by `_spawn_audio` to play (its errors raised here)."""
        audio.wait_started()
        deadline = time.monotonic() + 2.0
        while audio.status().callbacks == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.first_sound_s = time.monotonic() - self.options.t0
        log.info("first sound after %.2f s", self.first_sound_s)

    def _start_control(self) -> None:
        """OSC, OSCQuery and MIDI. A port in use or a missing MIDI API is reported, not fatal."""
        from .control.midi import MidiControl
        from .control.osc import OscServer
        from .control.oscquery import OscQueryServer
        from .patchwrite import PatchWriter

        patch = self.patch
        writer = PatchWriter(self.patch_path) if self.patch_path is not None else None
        if patch.midi.enabled:
            self.midi = self._guard("midi", lambda: MidiControl(patch.midi, self.store, writer=writer,
                                                                source=patch.source, on_program=self._program_change))
        if patch.osc.enabled:
            self.osc = self._guard("osc", lambda: OscServer(patch.osc, self.store, presets=patch.presets,
                                                            writer=writer, learner=self.midi,
                                                            on_quit=self.quit, modulator=self.modulation))
        if patch.oscquery.enabled and self.osc is not None:
            osc = self.osc
            self.oscquery = self._guard("oscquery", lambda: OscQueryServer(patch.oscquery, self.store, osc,
                                                                            allow=patch.osc.allow,
                                                                            status=self.page_status))

    def _start_scheduler(self) -> None:
        from .control.scheduler import Scheduler

        cfg = dataclasses.replace(self.patch.schedule, enabled=True)
        # a seed of its own each start: a restarted installation goes on with new scenes instead
        # of playing the same sequence again from its first scene
        seed = time.time_ns() & 0x7FFFFFFF
        self.scheduler = Scheduler(cfg, self.store, clock=self.clock, source=self.patch.source, seed=seed)
        log.info("scenes drawn with seed %d", seed)
        if self.scheduler.baked is not None and self.audio is not None:
            self.scheduler.add_listener(self._play_scene)

    def _start_form(self) -> None:
        from .form import Form

        self.form = Form(self.patch.form, start=dict(self.patch.params))
        self._form_t0 = self.clock()
        self._form_sent: dict[str, object] = {}
        asked = int(self.patch.form.most("audio/voices", 1))
        if asked > self.patch.audio.voices:
            self.report("form", f"the form asks for {asked} voices; [audio] voices = {self.patch.audio.voices} "
                                f"makes only that many ready ({self.patch.source})")
        log.info("form: %d stages, %.0f s%s", len(self.patch.form.stages), self.form.duration,
                 ", looping" if self.patch.form.loop else "")

    def _play_form(self, now: float) -> None:
        """Main thread, from `tick`: the form's values at this moment into the store (changed ones
        only, at most 20 times a second, so control surfaces are not flooded)."""
        if self.form is None or now - self._form_last < 0.05:
            return
        self._form_last = now
        for name, value in self.form.values_at(now - self._form_t0).items():
            if self._form_sent.get(name) != value:
                self._form_sent[name] = value
                self.store.set(name, value, source="form")

    def _play_scene(self, scene: Scene) -> None:
        """Scheduler listener (main thread, from `tick`): a baked scene's sound replaces the
        decoder's, crossfaded over the schedule's audio glide."""
        path = scene.wav or scene.audio
        if path is not None and self.audio is not None:
            self.audio.play(path)

    def _keyframe_source(self, model: ImageModel) -> KeyframeSource:
        """The window's pictures: the images of baked scenes when the scheduler plays a baked
        folder, else the generator process behind a handle the supervisor can restart. Built here,
        started by the window; it reads the parameters from this engine's shared snapshot."""
        from .scenes import BakedImageWorker
        from .supervise import RestartableWorker
        from .visual.worker import GanWorker

        cfg = self.patch.visual
        self.seed = cfg.seed or int(time.time()) & 0x7FFFFFFF
        if self.scheduler is not None and self.scheduler.baked is not None:
            return BakedImageWorker(self.scheduler)
        seed, snapshot = self.seed, self.snapshot.name
        return RestartableWorker(lambda: GanWorker(model, seed, snapshot, cfg.keyframes_per_s, cfg.threads,
                                                   cfg.compile))

    def supervision(self, port: int | None = None) -> Supervision:
        """/healthz, the systemd watchdog and the generator watchdog for this engine (not started).
        `port`: where /healthz listens (default the patch's `[web] health_port`; 0 = any free port)."""
        from .supervise import RestartableWorker, Supervision

        gan = self.keyframes if isinstance(self.keyframes, RestartableWorker) else None
        return Supervision(self.health, self.clock, self.report,
                           self.patch.web.health_port if port is None else port, gan=gan)

    def _start_supervision(self) -> None:
        """/healthz, the systemd watchdog and the generator watchdog, on their own thread."""
        self.healthz = self._guard("healthz", self.supervision)

    def show_window(self, deadline: float = float("inf"),
                    on_worker: Callable[[KeyframeSource], None] | None = None,
                    sink: FrameSink | None = None) -> WindowReport:
        """Open the performance window (or take the one the curtain opened while the engine was
        built) and run the render loop on this (the main) thread until quit or `deadline` (engine
        clock seconds); `sink` also gets every frame (NDI out). Raises DisplayError when no window
        opens."""
        from .visual.window import run_window

        model, keyframes, hooks, memory = self._render_parts()
        try:
            opened, self.opened = self.opened, None
            return run_window(self.patch.visual, model, self.seed, self.store, keyframes, hooks, deadline, on_worker,
                              opened, sink)
        finally:
            if memory is not None:
                memory.close()

    def show_offscreen(self, sink: FrameSink, deadline: float = float("inf")) -> WindowReport:
        """The render loop without a window (`--headless --ndi`): the sky offscreen at the patch's
        size, every frame to `sink`, on this (the main) thread until quit or `deadline`."""
        from .visual.window import run_offscreen

        model, keyframes, hooks, memory = self._render_parts()
        try:
            return run_offscreen(self.patch.visual, model, self.seed, self.store, keyframes, hooks, sink, deadline)
        finally:
            if memory is not None:
                memory.close()

    def _render_parts(self) -> tuple[ImageModel, KeyframeSource, WindowHooks, PictureMemory | None]:
        """The image model and keyframe source (made once), the render loop's hooks into this
        engine, and an installation's picture memory (closed by the caller)."""
        from .visual.model import load_image_model
        from .visual.window import WindowHooks

        cfg = self.patch.visual
        model = self.image_model = self.image_model or load_image_model(cfg.model)
        keyframes = self.keyframes = self.keyframes or self._keyframe_source(model)
        memory = None
        if self.options.state_dir is not None:
            from .visual.memory import LAST_PICTURE, PictureMemory

            memory = PictureMemory(self.options.state_dir / LAST_PICTURE, model.resolution)
        hooks = WindowHooks(clock=self.clock, running=lambda: self.running, quit=self.quit, tick=self.tick,
                            frame_done=self.frame_done, report=self.report, messages=self.messages,
                            learn=self.learn, note=self.patch.note, clear=self.clear,
                            remembered=memory.recall if memory else lambda: None,
                            shown=memory.offer if memory else lambda keyframe: None)
        return model, keyframes, hooks, memory

    def learn(self) -> str:
        """MIDI learn from the window's L key: bind the next control moved to the parameter touched
        last (main thread). Returns the overlay's line; a failure is reported, never raised."""
        if self.midi is None:
            return "MIDI learn: MIDI is off"
        try:
            return f"MIDI learn: move a control for {self.midi.learn()}"
        except CielError as exc:
            self.report("midi", str(exc))
            return f"MIDI learn: {exc}"

    def _program_change(self, program: int) -> None:
        """A MIDI program change (the MIDI reader thread): recall the preset at that place in the
        patch, counting from 0 (the presets live in the OSC server; none when OSC is off)."""
        if self.osc is not None:
            self.osc.recall_program(program)

    def _guard(self, source: str, make: Callable[[], Any]) -> Any:
        try:
            part = make()
            start = getattr(part, "start", None)
            if start is not None:
                start()
            return part
        except (CielError, OSError) as exc:
            self.report(source, str(exc))
            return None

    # — main-thread hooks —
    def tick(self, now: float) -> None:
        """Main thread, once per frame: poll MIDI, run the scheduler, supervise the audio process."""
        polls: list[tuple[str, Callable[[], object]]] = []
        if self.midi is not None:
            polls.append(("midi", self.midi.poll))
        if self.scheduler is not None:
            polls.append(("scheduler", functools.partial(self.scheduler.tick, now)))
        if self.form is not None:
            polls.append(("form", functools.partial(self._play_form, now)))
        if self.audio is not None and self._sound_pending is None:   # its start errors are raised by frame_done first
            polls.append(("audio", self.audio.poll))
        for name, poll in polls:
            try:
                poll()
            except CielError as exc:
                self.report(name, str(exc))
            except Exception as exc:  # noqa: BLE001 — a part's bug becomes a line on the overlay; the show goes on
                log.exception("%s failed in the frame's tick", name)
                self.report(name, f"{type(exc).__name__}: {exc}")

    def frame_done(self, now: float) -> None:
        """Main thread, after each flip: frame counters for the overlay, /healthz and the watchdog.
        After the first, it waits for the first sound (raising the audio process's start errors)."""
        if self._sound_pending is not None:
            audio, self._sound_pending = self._sound_pending, None
            self._await_sound(audio)
        self._frames += 1
        self._fps_n += 1
        self.last_frame = now
        if now - self._fps_t0 >= 1.0:
            self._fps = self._fps_n / (now - self._fps_t0)
            self._fps_t0, self._fps_n = now, 0

    def surfaces(self) -> list[ControlSurface]:
        """The control surfaces that run (MIDI, OSCQuery, OSC), in the order they stop."""
        parts: tuple[ControlSurface | None, ...] = (self.midi, self.oscquery, self.osc)
        return [p for p in parts if p is not None]

    # — any thread —
    def quit(self) -> None:
        """Ask the render loop to end (OSC /ciel/quit, the window's Escape key)."""
        self.running = False

    def report(self, source: str, message: str) -> None:
        """A failure as data: logged once per distinct message, kept for the overlay."""
        if self._messages.get(source) != message:
            log.warning("%s: %s", source, message)
        self._messages[source] = message

    def clear(self, source: str) -> None:
        self._messages.pop(source, None)

    def messages(self) -> list[str]:
        return [f"{k}: {v}" for k, v in self._messages.items()]

    def page_status(self) -> dict[str, object]:
        """What the control page shows beside the sliders (the OSCQuery server's threads): the
        overlay's problems, the MIDI learn under way and the presets."""
        learning = self.midi.status().get("learning") if self.midi is not None else None
        return {"name": self.patch.name, "problems": self.messages(), "learning": learning,
                "midi": self.midi is not None, "presets": list(self.osc.presets) if self.osc is not None else []}

    @property
    def fps(self) -> float:
        return self._fps

    def health(self) -> dict[str, Any]:
        """JSON-able status (for /healthz, the overlay and the systemd watchdog)."""
        now = self.clock()
        out: dict[str, Any] = {
            "uptime_s": round(now - self.started, 3),
            "fps": round(self._fps, 2),
            "frames": self._frames,
            "last_frame_age_s": round(now - self.last_frame, 3) if self._frames else None,
            "first_sound_s": self.first_sound_s,
            "messages": self.messages(),
        }
        if self.audio is not None:
            out["audio"] = dataclasses.asdict(self.audio.status())
        if self.listening is not None:
            out["listening"] = {"analyses": self.listening.published, "error": self.listening.error or None,
                                "routes": len(self.modulation.routes()) if self.modulation is not None else 0}
        for name in ("osc", "midi", "scheduler"):
            part = getattr(self, name)
            status = getattr(part, "status", None)
            out[name] = status() if callable(status) else None
        return out

    def close(self) -> None:
        """Stop every part: control first (no new changes), then sound with a fade-out."""
        self.running = False
        now = self.clock()
        log.info("stopped after %.1f s: %d frames, fps %.1f", now - self.started, self._frames, self._fps)
        if self.scheduler is not None:
            self.scheduler.close()
        for part in (self.healthz, *self.surfaces(), self.listening, self.keyframes, self.audio):
            if part is not None:
                try:
                    part.stop()
                except (CielError, OSError) as exc:
                    log.warning("while stopping: %s", exc)
        if self.opened is not None:    # a curtain the show never took over (a failed start)
            self.opened[0].display.quit()
            self.opened = None
        self.snapshot.close()
