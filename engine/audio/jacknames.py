"""JACK names a performer can find: the client `ciel` with ports `out_1`, `out_2` (and `in_1`).

PortAudio's JACK host names its client after the program ("python") and its ports from 0
(`out_0`, `out_1`). Patchbays (QjackCtl, Carla, `jack_connect`), session managers and the
documentation speak of `ciel:out_1` and `ciel:out_2`, counted from 1 like the speakers. So the
audio process:

1. `set_client_name(sd)` before PortAudio initialises: `PaJack_SetClientName("ciel")` (a
   second ciel on the same server becomes `ciel-01`, JACK's rule);
2. `number_ports_from_one()` once the stream runs: a short-lived JACK client renames the new
   client's `out_N` (and `in_N`) ports to `out_{N+1}` (highest first, so no two names collide)
   and connects the performer's input port (`--input`) to `in_1`.

Both are best effort and return what they did as text: a PortAudio built without JACK, or no
libjack, leaves the names as they are and the sound plays. Called from the audio process's main
thread, before and after the stream opens; never from the sound callback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from types import ModuleType

CLIENT = "ciel"
_JACK_NO_START_SERVER = 0x01
_EEXIST = 17                          # jack_connect: the connection is already there
_NAME = ctypes.create_string_buffer(64)   # PortAudio keeps the pointer, not a copy: it must live on


def set_client_name(sd: ModuleType, name: str = CLIENT) -> str:
    """Make PortAudio's JACK client `name`; re-initialises PortAudio through the `sounddevice`
    module `sd` (no stream may be open)."""
    try:
        lib = ctypes.CDLL(sd._libname)
        setter = lib.PaJack_SetClientName
        terminate, initialize = sd._terminate, sd._initialize
    except (OSError, AttributeError):
        return "PortAudio without JACK support (or a sounddevice without re-initialisation): client name left as it is"
    terminate()
    _NAME.value = name.encode()[:63]
    setter.argtypes = [ctypes.c_char_p]
    setter(_NAME)
    initialize()
    return f"JACK client name {name}"


def _libjack() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("jack") or "libjack.so.0"
    try:
        jack = ctypes.CDLL(path)
    except OSError:
        return None
    jack.jack_client_open.restype = ctypes.c_void_p
    jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    jack.jack_get_ports.restype = ctypes.POINTER(ctypes.c_char_p)
    jack.jack_get_ports.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
    jack.jack_port_by_name.restype = ctypes.c_void_p
    jack.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    jack.jack_port_rename.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
    jack.jack_client_close.argtypes = [ctypes.c_void_p]
    jack.jack_free.argtypes = [ctypes.c_void_p]
    jack.jack_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    jack.jack_disconnect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    jack.jack_port_get_all_connections.restype = ctypes.POINTER(ctypes.c_char_p)
    jack.jack_port_get_all_connections.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    jack.jack_get_buffer_size.restype = ctypes.c_uint32
    jack.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
    return jack


def period() -> int | None:
    """The running JACK server's period (frames per process cycle), or None without libjack or a
    server. PortAudio pulls a whole period from ciel's ring in one burst of callbacks when ciel's
    block is smaller, so the audio process keeps at least this much sound queued."""
    jack = _libjack()
    if jack is None:
        return None
    client = jack.jack_client_open(b"ciel-period", _JACK_NO_START_SERVER, None)
    if not client:
        return None
    try:
        return int(jack.jack_get_buffer_size(client))
    finally:
        jack.jack_client_close(client)


def _port_names(jack: ctypes.CDLL, client: int, pattern: str) -> list[str]:
    found = jack.jack_get_ports(client, pattern.encode(), None, 0)
    names: list[str] = []
    if found:
        i = 0
        while found[i]:
            names.append(found[i].decode())
            i += 1
        jack.jack_free(ctypes.cast(found, ctypes.c_void_p))
    return names


def number_ports_from_one(name: str = CLIENT, input_port: str | None = None) -> str:
    """Rename the ports `out_0…` (and `in_0…`) of the newest client called `name` (or
    `name-NN`) to `out_1…` (`in_1…`). With an input (`input_port` not None), `in_1` is taken
    off what PortAudio connected it to (the first capture port) and connected to `input_port`
    (a performer's instrument, e.g. `system:capture_1`), or left open for a patchbay when it is
    "". Returns what happened, one line; a line with "input" and "not" in it is a problem."""
    jack = _libjack()
    if jack is None:
        return "no libjack: ports keep PortAudio's names"
    client = jack.jack_client_open(b"ciel-ports", _JACK_NO_START_SERVER, None)
    if not client:
        return "no JACK server answered: ports keep PortAudio's names"
    try:
        names = _port_names(jack, client, f"^{re.escape(name)}(-[0-9]+)?:(out|in)_[0-9]+$")
        owners = {n.split(":", 1)[0] for n in names if n.endswith(":out_0")}
        if not owners:
            return "no ports named out_0 to renumber"
        owner = sorted(owners)[-1]
        done = []
        for kind in ("out", "in"):
            ours = sorted((int(n.rsplit("_", 1)[1]), n) for n in names if n.startswith(f"{owner}:{kind}_"))
            for index, full in reversed(ours):
                port = jack.jack_port_by_name(client, full.encode())
                if not port or jack.jack_port_rename(client, port, f"{kind}_{index + 1}".encode()) != 0:
                    return f"could not rename {full}"
            if ours:
                done.append(f"{owner}:{kind}_1…{kind}_{len(ours)}")
        line = "JACK ports " + ", ".join(done)
        if input_port is None:
            return line
        dest = f"{owner}:in_1"
        port = jack.jack_port_by_name(client, dest.encode())
        if not port:
            return f"{line}; the input is not open: no port {dest}"
        found = jack.jack_port_get_all_connections(client, port)
        if found:
            i = 0
            while found[i]:
                jack.jack_disconnect(client, found[i], dest.encode())
                i += 1
            jack.jack_free(ctypes.cast(found, ctypes.c_void_p))
        if not input_port:
            return f"{line}; {dest} open for a patchbay"
        if jack.jack_connect(client, input_port.encode(), dest.encode()) not in (0, _EEXIST):
            return f"{line}; the input {input_port!r} is not connected: not a JACK output port (connect {dest} in a patchbay)"
        return f"{line}; {input_port} → {dest}"
    finally:
        jack.jack_client_close(client)
