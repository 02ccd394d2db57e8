"""The lock file and the compatibility rules: what `zapc check` calls a breaking change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanzocloud.zap.schema import Decl, Member, Schema

LOCK_VERSION = 1
Description = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the locked and the current schema."""

    breaking: bool
    where: str  # "payments.zap:12" (current file) or "payments.zap" when the thing is gone
    message: str

    def __str__(self) -> str:
        kind = "breaking" if self.breaking else "compatible"
        return f"{self.where}: {kind}: {self.message}"


def _members(members: tuple[Member, ...]) -> list[list[str]]:
    return [[m.name, m.type.spelling() if m.type else ""] for m in members]


def _lines(members: tuple[Member, ...]) -> list[int]:
    return [m.line for m in members]


def describe(schema: Schema) -> Description:
    """A normalized, line-free description of every ordinal and type in `schema`."""
    types: Description = {}
    for decl in schema.decls:
        if decl.kind == "interface":
            types[decl.name] = {
                "kind": "interface",
                "methods": [
                    [m.name, _members(m.params), _members(m.results)] for m in decl.methods
                ],
            }
        elif decl.kind == "enum":
            types[decl.name] = {"kind": "enum", "values": [m.name for m in decl.members]}
        else:
            types[decl.name] = {"kind": decl.kind, "fields": _members(decl.members)}
    return {"version": schema.version, "types": types}


def read_lock(path: Path) -> dict[str, Description]:
    """The locked description of each schema, by schema name; empty when there is no lock."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("lock_version") != LOCK_VERSION:
        raise ValueError(f"{path}: unsupported lock_version {data.get('lock_version')!r}")
    schemas: dict[str, Description] = data["schemas"]
    return schemas


def write_lock(path: Path, schemas: dict[str, Description]) -> None:
    """Write the lock deterministically (sorted keys, two-space indent)."""
    data = {"lock_version": LOCK_VERSION, "schemas": schemas}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def diff(old: Description, schema: Schema) -> list[Change]:
    """Every change from `old` (the lock) to `schema`; appends are compatible."""
    new = describe(schema)
    file = schema.path
    changes: list[Change] = []
    for name, was in old["types"].items():
        decl = schema.get(name)
        now = new["types"].get(name)
        if decl is None or now is None:
            changes.append(Change(True, file, f"{was['kind']} {name} was removed or renamed"))
            continue
        where = f"{file}:{decl.line}"
        if now["kind"] != was["kind"]:
            changes.append(
                Change(True, where, f"{name} changed from {was['kind']} to {now['kind']}")
            )
        elif was["kind"] == "interface":
            changes += _diff_methods(file, decl, was["methods"], now["methods"])
        elif was["kind"] == "enum":
            olds = [[v, ""] for v in was["values"]]
            news = [[v, ""] for v in now["values"]]
            lines = _lines(decl.members)
            changes += _diff_list(file, decl, f"enum {name}", "value", olds, news, lines)
        else:
            label = f"{was['kind']} {name}"
            what = "variant" if was["kind"] == "union" else "field"
            changes += _diff_list(
                file, decl, label, what, was["fields"], now["fields"], _lines(decl.members)
            )
    for name, now in new["types"].items():
        if name not in old["types"]:
            decl = schema.get(name)
            line = decl.line if decl else 0
            changes.append(Change(False, f"{file}:{line}", f"{now['kind']} {name} was added"))
    return changes


def _diff_list(
    file: str,
    decl: Decl,
    label: str,
    what: str,
    old: list[list[Any]],
    new: list[list[Any]],
    lines: list[int],
) -> list[Change]:
    """Positional comparison: ordinal i must keep its name and type; extra ordinals append."""
    changes: list[Change] = []
    new_names = [n[0] for n in new]
    for ordinal, (name, spelling) in enumerate(old):
        if ordinal >= len(new):
            changes.append(
                Change(True, f"{file}:{decl.line}", f"{label}: {what} {name} (#{ordinal}) removed")
            )
            continue
        cur_name, cur_spelling = new[ordinal][0], new[ordinal][1]
        where = f"{file}:{lines[ordinal]}"
        if cur_name != name:
            if name in new_names:
                moved = new_names.index(name)
                msg = f"{what} {name} moved from #{ordinal} to #{moved} (reordered)"
            else:
                msg = f"{what} #{ordinal} renamed or replaced: {name} -> {cur_name}"
            changes.append(Change(True, where, f"{label}: {msg}"))
        elif cur_spelling != spelling:
            msg = f"{what} {name} (#{ordinal}) retyped from {spelling} to {cur_spelling}"
            changes.append(Change(True, where, f"{label}: {msg}"))
    for ordinal in range(len(old), len(new)):
        where = f"{file}:{lines[ordinal]}"
        changes.append(
            Change(False, where, f"{label}: {what} {new[ordinal][0]} (#{ordinal}) appended")
        )
    return changes


def _diff_methods(
    file: str, decl: Decl, old: list[list[Any]], new: list[list[Any]]
) -> list[Change]:
    label = f"interface {decl.name}"
    changes = _diff_list(
        file, decl, label, "method",
        [[m[0], ""] for m in old], [[m[0], ""] for m in new], [m.line for m in decl.methods],
    )
    for ordinal, (name, params, results) in enumerate(old):
        if ordinal >= len(new) or new[ordinal][0] != name:
            continue  # already reported by the positional comparison above
        method = decl.methods[ordinal]
        for part, was, now, members in (
            ("parameter", params, new[ordinal][1], method.params),
            ("result", results, new[ordinal][2], method.results),
        ):
            lines = _lines(members)
            changes += _diff_list(file, decl, f"{label}.{name}", part, was, now, lines)
    return changes
