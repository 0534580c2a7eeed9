"""The OSC address table of docs/osc.md, generated from the registry.

    python -m engine.control.oscdoc --doc     rewrite the table between the markers of docs/osc.md
    python -m engine.control.oscdoc           print the table
"""

from __future__ import annotations

from ..params import Registry


def address_table(registry: Registry) -> str:
    """The parameter addresses as a Markdown table (docs/osc.md embeds it; a test keeps it current)."""
    rows = ["| address | arguments | range | default | unit | description |",
            "|---|---|---|---|---|---|"]
    for p in registry:
        if p.kind == "trigger":
            args, rng, default = "none or `1`", "", ""
        elif p.readonly:
            args, rng, default = "read-only (`/ciel/get`, feedback)", f"{p.minimum:g} … {p.maximum:g}", ""
        else:
            t = {"float": "f", "int": "i", "bool": "i (0/1)"}[p.kind]
            args = t if p.size == 1 else f"{p.size} × f (or `/{{i}} f`, `/at i f`)"
            rng, default = f"{p.minimum:g} … {p.maximum:g}", f"{p.default:g}"
        labels = f" ({', '.join(f'{i} = {v}' for i, v in enumerate(p.labels))})" if p.labels else ""
        rows.append(f"| `{p.address}` | {args} | {rng} | {default} | {p.unit} | {p.description}{labels} |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- address table: begin (python -m engine.control.oscdoc --doc) -->", "<!-- address table: end -->"


def update_doc(path: str, registry: Registry) -> bool:
    """Rewrite the address table between the markers of docs/osc.md; True if it changed."""
    from pathlib import Path

    from ..configio import atomic_write

    doc = Path(path).read_text(encoding="utf-8")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{address_table(registry)}{END}{tail}"
    if new != doc:
        atomic_write(Path(path), new)
    return new != doc


if __name__ == "__main__":
    import sys

    from ..params import REGISTRY

    if sys.argv[1:] == ["--doc"]:
        target = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "osc.md")
        print(f"{target}: {'updated' if update_doc(target, REGISTRY) else 'already current'}")
    else:
        print(address_table(REGISTRY), end="")
