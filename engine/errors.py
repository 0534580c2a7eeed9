"""Typed errors. Each carries the file, key, address or device it is about and what was expected,
so the message alone tells a performer or an installer what to fix."""

from __future__ import annotations


class CielError(Exception):
    """Base of every error ciel raises on purpose. The CLI prints these as one line, no traceback."""


class ConfigError(CielError):
    """A TOML file (patch, model card, training config) has a bad key, type or value."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class PatchError(ConfigError):
    """A patch file is invalid (unknown key, wrong type, value out of range, missing file)."""


class ModelError(CielError):
    """A model file is missing, corrupt or does not match its card."""


class AudioDeviceError(CielError):
    """No usable audio output (no sound card, no JACK server, device name not found)."""


class DisplayError(CielError):
    """No display or OpenGL context could be opened."""


class ParamError(CielError):
    """An unknown parameter name or a value of the wrong shape."""


class DatasetError(CielError):
    """A dataset folder is missing or unreadable."""


class MidiUnavailable(CielError):
    """No MIDI API could be opened (no ALSA sequencer, no JACK server, no CoreMIDI)."""


class TrainError(CielError):
    """A run folder or checkpoint is missing, unreadable or belongs to another kind of model."""


class SkippedFile(CielError):
    """An archive file `ciel ingest` cannot use; the message is the reason shown in its report."""


class MissingPackages(CielError):
    """The Debian packages the generated phone archive is made from are not installed
    (`.packages` names them; the message says how to install them)."""

    def __init__(self, message: str, packages: list[str]) -> None:
        super().__init__(message)
        self.packages = list(packages)
