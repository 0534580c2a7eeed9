"""Frozen dataclasses from TOML tables, validated on load.

Every config section in ciel is a frozen dataclass whose fields carry type hints. `build` walks a
TOML table into such a dataclass: an unknown key, a wrong type or a value outside the field's
`metadata` range raises `ConfigError` naming the file and the dotted key. Nothing is evaluated.
`atomic_write` replaces a file so that a crash leaves the old or the new content, never half.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import stat
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

T = TypeVar("T")


def field(default: Any, *, minimum: float | None = None, maximum: float | None = None,
          choices: tuple[Any, ...] | None = None, doc: str = "") -> Any:
    """A dataclass field with an optional range or set of choices checked by `build`."""
    meta = {"minimum": minimum, "maximum": maximum, "choices": choices, "doc": doc}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for defaults: config is immutable")
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error raises `error` naming the file."""
    try:
        with open(path, "rb") as fh:
            table: dict[str, Any] = tomllib.load(fh)
            return table
    except FileNotFoundError:
        raise error(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(str(path), "", f"not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise error(str(path), "", f"not UTF-8 text ({exc})") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(tp: Any, value: Any, source: str, key: str, error: type[ConfigError]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        problems = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, source, key, error)
            except ConfigError as exc:
                problems.append(exc.problem)
        raise error(source, key, " or ".join(problems))
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise error(source, key, f"expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise error(source, key, f"expected a table, got {type(value).__name__}")
        return build(typing.cast(type, tp), value, source, prefix=key, error=error)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise error(source, key, f"expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, source, f"{key}[{i}]", error) for i, v in enumerate(value))
        if len(args) != len(value):
            raise error(source, key, f"expected a list of {len(args)} values, got {len(value)}")
        return tuple(_check(a, v, source, f"{key}[{i}]", error) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        kt, vt = get_args(tp)
        if not isinstance(value, dict):
            raise error(source, key, f"expected a table, got {type(value).__name__}")
        return types.MappingProxyType({k: _check(vt, v, source, f"{key}.{k}", error) for k, v in value.items()})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(source, key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(source, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise error(source, key, f"expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise error(source, key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise error(source, key, f"unsupported config type {_type_name(tp)}")


def array_of_tables(raw: object, source: str, key: str, what: str,
                    error: type[ConfigError] = ConfigError) -> list[tuple[str, dict[str, Any]]]:
    """The entries of a TOML array of tables (`[[key]]`) as (their dotted key "key[i]", a copy of
    the table); `error(source, key, problem)` when it is not one, or an entry is not a table
    (`what` says what an entry holds)."""
    if not isinstance(raw, list):
        raise error(source, key, f"expected an array of tables ([[{key}]])")
    out = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise error(source, f"{key}[{i}]", f"expected a table with {what}")
        out.append((f"{key}[{i}]", dict(table)))
    return out


def build(cls: type[T], table: dict[str, Any], source: str, prefix: str = "",
          error: type[ConfigError] = ConfigError) -> T:
    """Validate `table` against dataclass `cls` and return an instance.

    Raises `error(source, dotted_key, problem)` for unknown keys, wrong types and values
    outside a field's `minimum`/`maximum`/`choices`.
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields or not fields[key].init:
            known = ", ".join(sorted(k for k, f in fields.items() if f.init))
            raise error(source, dotted, f"unknown key (known keys: {known})")
        f = fields[key]
        checked = _check(hints[key], value, source, dotted, error)
        meta = f.metadata
        if meta:
            lo, hi, choices = meta.get("minimum"), meta.get("maximum"), meta.get("choices")
            if isinstance(checked, (int, float)) and not isinstance(checked, bool):
                if (lo is not None and checked < lo) or (hi is not None and checked > hi):
                    raise error(source, dotted, f"expected a value in [{lo}, {hi}], got {checked!r}")
            if choices is not None and checked not in choices:
                raise error(source, dotted, f"expected one of {list(choices)}, got {checked!r}")
        kwargs[key] = checked
    return cls(**kwargs)


def to_table(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain TOML-writable data; None values are left out."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = to_table(getattr(obj, f.name))
            if v is not None and f.init:
                out[f.name] = v
        return out
    if isinstance(obj, (tuple, list)):
        return [to_table(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_table(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def dumps_toml(table: dict[str, Any]) -> str:
    """Write plain data (from `to_table`) as TOML: scalars first, then sub-tables, then arrays of tables."""
    lines: list[str] = []

    def emit(tbl: dict[str, Any], path: str) -> None:
        subs, arrays = [], []
        for k, v in tbl.items():
            if isinstance(v, dict):
                subs.append((k, v))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                arrays.append((k, v))
            else:
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subs:
            name = f"{path}.{_toml_key(k)}" if path else _toml_key(k)
            lines.append(f"\n[{name}]")
            emit(v, name)
        for k, v in arrays:
            name = f"{path}.{_toml_key(k)}" if path else _toml_key(k)
            for item in v:
                lines.append(f"\n[[{name}]]")
                emit(item, name)

    emit(table, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def atomic_write(path: Path, data: bytes | str, *, backup: bool = False) -> Path:
    """Replace a file so that a crash leaves either the old or the new content, never half of one.

    The bytes go to a temporary file beside the target, which is flushed to disk, given the old
    file's mode (and owner, where this process may) and renamed over the target; then the folder
    is flushed, so the rename itself survives a power cut. A new file gets the usual mode (0666
    less the umask). When `path` is a symbolic link, its target is replaced and the link stays a
    link. With `backup`, the previous content is kept as `NAME.bak` beside the target (written the
    same way, before the target is replaced). Returns the path written (the link's target).
    Blocks for the disk: call it off the audio and render threads.
    """
    target = Path(path).resolve()   # a link's target, so that the link stays a link
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    tmp = _write_temporary(target, payload, old)
    bak_tmp: Path | None = None
    try:
        if backup and old is not None:
            bak = target.with_name(target.name + ".bak")
            bak_tmp = _write_temporary(bak, target.read_bytes(), old)
            os.replace(bak_tmp, bak)
            bak_tmp = None
        os.replace(tmp, target)
    except BaseException:
        for leftover in (tmp, bak_tmp):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)
    return target


def _write_temporary(target: Path, payload: bytes, like: os.stat_result | None) -> Path:
    """A flushed file `.NAME.xxxxxxxx.tmp` beside `target`, with the mode and owner of `like`."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:   # os.open applies the umask (mkstemp would make it 0600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if like is not None:
                _copy_owner_and_mode(fh.fileno(), like)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _copy_owner_and_mode(fd: int, like: os.stat_result) -> None:
    if hasattr(os, "fchown") and (like.st_uid, like.st_gid) != (os.getuid(), os.getgid()):
        try:    # another user's or group's file: only root (or a member of the group) may keep it so
            os.fchown(fd, like.st_uid, like.st_gid)
        except PermissionError:
            try:
                os.fchown(fd, -1, like.st_gid)
            except PermissionError:
                pass
    if hasattr(os, "fchmod"):   # not on Windows
        os.fchmod(fd, stat.S_IMODE(like.st_mode))   # after fchown, which may clear set-id bits


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:   # some file systems (network, FUSE) cannot flush a folder; the rename is done
        pass
    finally:
        os.close(fd)


# where patches/, models/ and shaders/ live: in an installed package, its `_data` folder (setup.py
# copies them there when the wheel is built); in a source checkout, the repository's root
_PACKAGE = Path(__file__).resolve().parent
ROOT = _PACKAGE / "_data" if (_PACKAGE / "_data").is_dir() else _PACKAGE.parent


def resolve_path(value: str, base: Path) -> Path:
    """A path from a patch: absolute, else relative to the patch folder, else to the ciel root."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for root in (base, ROOT):
        if (root / p).exists():
            return (root / p).resolve()
    return (base / p).resolve()
