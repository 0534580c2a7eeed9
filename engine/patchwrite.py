"""Edits of a performer's patch file that cannot break it: MIDI-learned mappings and stored presets.

`PatchWriter` parses the patch with tomlkit and changes only the entry concerned, so comments, key
order and layout survive; the new text must load exactly as the engine loads a patch at start
before it replaces the file (`configio.atomic_write`: mode, owner and symlink kept, `NAME.bak`,
fsynced). The OSC server (preset store) and MIDI learn get a writer from the wiring (engine/app.py)
and see it through their own Protocols, so the control layer never imports this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import tomlkit
from tomlkit import TOMLDocument
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array, Comment, InlineTable, Null, Table, Whitespace

from .configio import atomic_write
from .control.config import Control, MidiMapping, TomlValue, check_mapping, controls, mapping_table, parse_mapping, preset_name, selects
from .errors import PatchError
from .params import REGISTRY, Registry
from .patch import patch_from_text

T = TypeVar("T")


PatchCheck = Callable[[str, Path], object]
"""Validates the whole text of a patch as the engine loads it at start, raising PatchError
(`patch_from_text`; the second argument is the patch's path, for relative paths)."""

_WRITE_LOCK = threading.Lock()


class PatchWriter:
    """Edits the patch file for MIDI learn and preset store: adds or replaces a `[[midi.mappings]]`
    entry or a `[presets."NAME"]` table, removes mappings.

    The file is parsed with tomlkit and only the entry concerned changes, so comments, key order
    and layout survive every write, a replacement included. The new text must load exactly as the
    engine loads a patch at start (`check`, by default `engine.patch.patch_from_text`) before it
    replaces the file, through `atomic_write`: a symlinked patch stays a link, its mode and owner
    stay, the previous text is kept as `NAME.bak`, and a crash leaves the old or the new file.
    Anything else raises PatchError and leaves the file as it was.

    Writes block on the disk (a few fsyncs): call from the MIDI, OSC or main thread, never the audio
    callback. Any thread; writes in this process are serialised.
    """

    def __init__(self, path: str | Path, check: PatchCheck = patch_from_text, registry: Registry = REGISTRY) -> None:
        self.path = Path(path)
        self.check = check
        self.registry = registry

    def add_mapping(self, mapping: MidiMapping) -> None:
        """Bind `mapping`, replacing in place the mapping(s) of the same control (see `controls`)."""
        check_mapping(mapping, self.registry, str(self.path), "midi.mappings[new]")
        entry = mapping_table(mapping)

        def change(doc: TOMLDocument) -> None:
            entries = _mappings(doc, self.path)
            if entries is None:
                _add_mappings(doc, entry)
                return
            same = [i for i, m in enumerate(self._parsed(entries)) if controls(m) & controls(mapping)]
            if not same:
                _append_entry(entries, entry)
                return
            _replace_entry(entries, same[0], entry)
            for i in reversed(same[1:]):
                _delete_entry(entries, i)

        self._edit(change)

    def remove_mappings(self, param: str | None = None, index: int = -1, control: Control | None = None) -> int:
        """Remove the mappings `selects(mapping, param, index, control)` picks (param None = every
        parameter, index -1 = every element, control None = every control); returns how many."""
        def change(doc: TOMLDocument) -> int:
            entries = _mappings(doc, self.path)
            if entries is None:
                return 0
            gone = [i for i, m in enumerate(self._parsed(entries)) if selects(m, param, index, control)]
            if gone and len(gone) == len(entries):
                _drop_mappings(doc)
            else:
                for i in reversed(gone):
                    _delete_entry(entries, i)
            return len(gone)

        return self._edit(change)

    def store_preset(self, name: str, values: Mapping[str, float | tuple[float, ...]]) -> str:
        """Write `values` (parameter name → value, in the parameter's unit) as `[presets."NAME"]`,
        replacing a preset of that name in place. `name` goes through `preset_name` (ValueError
        saying the rule); returns the name stored."""
        name = preset_name(name)
        entry: dict[str, TomlValue] = {k: ([float(x) for x in v] if isinstance(v, (tuple, list)) else float(v))
                                       for k, v in values.items()}

        def change(doc: TOMLDocument) -> None:
            presets = doc.get("presets")
            if presets is None:
                table = _new_table(entry)
                group = tomlkit.table(is_super_table=True)
                group.add(name, table)
                doc.add("presets", group)
            elif not isinstance(presets, (Table, OutOfOrderTableProxy)):
                raise PatchError(str(self.path), "presets", 'written inline; ciel stores presets into [presets."NAME"] '
                                 "tables only (move them there)")
            elif name in presets:
                old = presets[name]
                if not isinstance(old, Table):
                    raise PatchError(str(self.path), f"presets.{name}", "written inline; ciel replaces a preset only "
                                     f'in a [presets."{name}"] table (move it there)')
                presets[name] = _rebuilt(old, entry)
            else:
                table = _new_table(entry)
                last = _last_table(presets) if isinstance(presets, Table) else None
                if last is not None:   # the new preset goes after the last one and takes over its tail
                    key, before = last
                    table = _rebuilt(table, entry, tail=_own_tail(before))
                    presets[key] = _rebuilt(before, None, tail=[tomlkit.nl()])
                presets[name] = table

        self._edit(change)
        return name

    def _parsed(self, entries: AoT | Array) -> list[MidiMapping]:
        """The mappings in the file, validated (PatchError names the entry)."""
        out = []
        for i, item in enumerate(entries):
            if not isinstance(item, (Table, InlineTable)):
                raise PatchError(str(self.path), f"midi.mappings[{i}]", "expected a table")
            out.append(parse_mapping(item.unwrap(), str(self.path), f"midi.mappings[{i}]"))
        return out

    def _edit(self, change: Callable[[TOMLDocument], T]) -> T:
        """Parse the file, apply `change`, check the new text and replace the file with it."""
        source = str(self.path)
        check = self.check
        with _WRITE_LOCK:
            try:
                old = self.path.read_bytes().decode("utf-8")
            except FileNotFoundError:
                raise PatchError(source, "", "file not found") from None
            except OSError as exc:
                raise PatchError(source, "", f"cannot read it ({exc.strerror or exc})") from None
            except UnicodeDecodeError as exc:
                raise PatchError(source, "", f"not UTF-8 text ({exc})") from None
            try:
                doc = tomlkit.parse(old)
                result = change(doc)
                text = doc.as_string()
            except TOMLKitError as exc:
                raise PatchError(source, "", f"not valid TOML, or not editable ({exc})") from None
            if text == old:
                return result
            check(text, self.path)   # parsed again (tomllib) and validated; PatchError leaves the file as it was
            try:
                atomic_write(self.path, text.encode("utf-8"), backup=True)
            except OSError as exc:   # a full disk, a read-only folder: the old file is untouched
                raise PatchError(source, "", f"cannot write it ({exc.strerror or exc}); nothing changed") from None
            return result


Tail = list[Comment | Whitespace]


# — tomlkit edits. A table's body ends with its "tail": the blank lines and comments after its last
# value, which read as belonging to what follows (the comment above the next [[entry]] or [table]).
# Every edit keeps each tail where it reads: a new entry after the last one takes over its tail, a
# removed entry leaves its tail to the entry before it. —

def _mappings(doc: TOMLDocument, path: Path) -> AoT | Array | None:
    midi = doc.get("midi")
    if midi is None:
        return None
    if not isinstance(midi, (Table, OutOfOrderTableProxy)):
        raise PatchError(str(path), "midi", "expected a table")
    entries = midi.get("mappings")
    if entries is None or isinstance(entries, (AoT, Array)):
        return entries
    raise PatchError(str(path), "midi.mappings", "expected [[midi.mappings]] tables")


def _add_mappings(doc: TOMLDocument, entry: Mapping[str, TomlValue]) -> None:
    """The first mapping: after the values of `[midi]` (taking over the section's tail), or as a
    `[[midi.mappings]]` at the end of the file when there is no `[midi]`."""
    midi = doc.get("midi")
    table = _new_table(entry)
    if isinstance(midi, Table) and not midi.is_super_table():
        table = _rebuilt(table, entry, tail=_own_tail(midi))
        midi = _rebuilt(midi, None, tail=[tomlkit.nl()])
        doc["midi"] = midi
    elif midi is None:
        midi = tomlkit.table(is_super_table=True)
        doc.add("midi", midi)
    entries = tomlkit.aot()
    entries.append(table)
    midi["mappings"] = entries


def _drop_mappings(doc: TOMLDocument) -> None:
    """Remove every mapping. The tail of the last entry (the comment above what follows) ends the
    `[midi]` section, or, where the entries have no `[midi]` header above them, goes above the
    table that follows them."""
    midi = doc["midi"]
    entries = midi["mappings"]
    last_tail = _own_tail(entries[-1]) if isinstance(entries, AoT) and len(entries) else []
    if isinstance(midi, Table) and not midi.is_super_table():
        del midi["mappings"]   # the comments above the first entry now end the section: they stay
        doc["midi"] = _rebuilt(midi, None, tail=_joined(_own_tail(midi), last_tail))
        return
    following = _table_after(doc, entries)
    del midi["mappings"]
    if isinstance(midi, Table) and not len(midi):
        del doc["midi"]
    if following is not None and any(isinstance(item, Comment) for item in last_tail):
        following.trivia.indent = "".join(item.as_string() for item in last_tail) + following.trivia.indent


def _append_entry(entries: AoT | Array, entry: Mapping[str, TomlValue]) -> None:
    if isinstance(entries, Array):
        entries.append(_inline(entry))
        return
    table = _new_table(entry)
    if len(entries):
        last = entries[-1]
        table = _rebuilt(table, entry, tail=_own_tail(last))
        entries[-1] = _rebuilt(last, None, tail=[tomlkit.nl()])
    entries.append(table)


def _replace_entry(entries: AoT | Array, i: int, entry: Mapping[str, TomlValue]) -> None:
    old = entries[i]
    entries[i] = _rebuilt(old, entry) if isinstance(old, Table) else _inline(entry)


def _delete_entry(entries: AoT | Array, i: int) -> None:
    """Remove entry i; its tail (the comment above the next entry) joins the tail of the entry
    before it, or, for the first entry, goes above the entry after it."""
    if isinstance(entries, Array) or len(entries) == 1:
        del entries[i]
        return
    tail = _own_tail(entries[i])
    if i > 0:
        before = entries[i - 1]
        entries[i - 1] = _rebuilt(before, None, tail=_joined(_own_tail(before), tail))
    elif any(isinstance(item, Comment) for item in tail):   # blank lines alone: the entry after has its own
        after = entries[1]
        after.trivia.indent = "".join(item.as_string() for item in tail) + after.trivia.indent
    del entries[i]


def _tail_start(table: Table) -> int:
    body = table.value.body
    i = len(body)
    while i > 0 and body[i - 1][0] is None and isinstance(body[i - 1][1], (Whitespace, Comment, Null)):
        i -= 1
    return i


def _own_tail(table: Table) -> Tail:
    """The blank lines and comments after the last value of `table` (less the Null items: what
    tomlkit leaves of a removed key, rendered as nothing)."""
    return [item for _, item in table.value.body[_tail_start(table):] if isinstance(item, (Comment, Whitespace))]


def _deep_tail(table: Table) -> Tail:
    """The tail of `table`, or of its last sub-table when that ends it (`[presets.x.audio]`)."""
    body = table.value.body
    if _tail_start(table) == len(body) and body and isinstance(body[-1][1], Table):
        return _deep_tail(body[-1][1])
    return _own_tail(table)


def _joined(first: Tail, second: Tail) -> Tail:
    """Two tails one after the other, with one blank line where both have one at the seam."""
    if first and second and isinstance(first[-1], Whitespace) and isinstance(second[0], Whitespace):
        second = second[1:]
    return first + second


def _table_after(doc: TOMLDocument, entries: AoT | Array) -> Table | None:
    """The first table with a header of its own after the top-level item that holds `entries`."""
    found = False
    for _, item in doc.body:
        if found:
            while isinstance(item, Table) and item.is_super_table() and len(item.value.body):
                item = item.value.body[0][1]
            if isinstance(item, AoT) and len(item):
                item = item[0]
            if isinstance(item, Table):
                return item
        elif item is entries or (isinstance(item, Table) and any(v is entries for _, v in item.value.body)):
            found = True
    return None


def _rebuilt(old: Table, values: Mapping[str, TomlValue] | None, tail: Tail | None = None) -> Table:
    """A copy of `old` holding `values` (None = its own) followed by `tail` (None = its own),
    keeping everything else of `old`: its header line, its comments, the order of its keys, an
    unchanged value as it was written, a changed value's end-of-line comment. Keys not in
    `values` go (a dropped sub-table's tail stays); new keys follow, in the order of `values`."""
    new = tomlkit.table(is_super_table=old.is_super_table())
    trivia = old.trivia
    new.trivia.indent, new.trivia.comment_ws = trivia.indent, trivia.comment_ws
    new.trivia.comment, new.trivia.trail = trivia.comment, trivia.trail
    body = old.value.body
    kept: set[str] = set()
    dropped_tails: Tail = []
    for key, item in body[:_tail_start(old)]:
        if key is None:
            if isinstance(item, (Comment, Whitespace)):   # not Null
                new.add(item)
        elif values is None:
            new.add(key, item)
        elif key.key in values:
            value = values[key.key]
            if _same(item.unwrap(), value):
                new.add(key, item)
            else:
                fresh = tomlkit.item(value)
                fresh.trivia.comment_ws, fresh.trivia.comment = item.trivia.comment_ws, item.trivia.comment
                new.add(key, fresh)
            kept.add(key.key)
        elif isinstance(item, Table):
            dropped_tails += _deep_tail(item)
    for k, v in (values or {}).items():
        if k not in kept:
            new.add(k, tomlkit.item(v))
    for item in _ending_in_whitespace(dropped_tails + _own_tail(old) if tail is None else tail):
        new.add(item)
    return new


def _ending_in_whitespace(tail: Tail) -> Tail:
    """The same text, ending in a Whitespace item: tomlkit adds a blank line after a table put in
    place of another unless it ends so."""
    if tail and isinstance(tail[-1], Comment) and tail[-1].trivia.trail.endswith("\n"):
        tail[-1].trivia.trail = tail[-1].trivia.trail[:-1]
        return [*tail, tomlkit.ws("\n")]
    return tail


def _new_table(entry: Mapping[str, TomlValue]) -> Table:
    table = tomlkit.table()
    for k, v in entry.items():
        table.add(k, tomlkit.item(v))
    return table


def _inline(entry: Mapping[str, TomlValue]) -> InlineTable:
    table = tomlkit.inline_table()
    for k, v in entry.items():
        table.add(k, tomlkit.item(v))
    return table


def _last_table(group: Table) -> tuple[str, Table] | None:
    last = None
    for key, item in group.value.body:
        if key is not None and isinstance(item, Table):
            last = (key.key, item)
    return last


def _same(written: object, value: object) -> bool:
    """Whether a value read from the file equals `value` (1 and 1.0 do; true and 1 do not)."""
    if isinstance(written, bool) or isinstance(value, bool):
        return type(written) is type(value) and written == value
    if isinstance(written, list) and isinstance(value, list):
        return len(written) == len(value) and all(_same(a, b) for a, b in zip(written, value))
    return written == value
