"""Semantic checks on a parsed schema: names, type resolution, and generated-name clashes."""

from __future__ import annotations

import difflib
import re

from hanzocloud.zap.schema import (
    BUILTIN_TYPE_NAMES,
    PRIMITIVES,
    Decl,
    Member,
    Schema,
    TypeRef,
    ZapSyntaxError,
)

_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_MEMBER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# The generated RPC client adds a keyword-only `timeout` to every method.
_RESERVED_PARAMS = frozenset({"timeout"})


def variant_class(union: str, variant: str) -> str:
    """The generated struct wrapping one union variant: `Shape` + `circle` -> `ShapeCircle`."""
    return union + variant[:1].upper() + variant[1:]


def validate(schema: Schema) -> None:
    """Raise ZapSyntaxError for the first semantic problem in `schema`."""
    path = schema.path
    types: dict[str, Decl] = {}
    for decl in schema.decls:
        if not _TYPE_NAME.fullmatch(decl.name):
            raise ZapSyntaxError(
                path, decl.line, decl.column,
                f"type name '{decl.name}' must start with a capital letter and use only "
                "letters and digits",
            )
        if decl.name in BUILTIN_TYPE_NAMES:
            raise ZapSyntaxError(path, decl.line, decl.column, f"'{decl.name}' is a built-in type")
        if decl.name in types:
            first = types[decl.name]
            raise ZapSyntaxError(
                path, decl.line, decl.column,
                f"'{decl.name}' is already declared at line {first.line}",
            )
        types[decl.name] = decl
    generated: dict[str, int] = {name: decl.line for name, decl in types.items()}
    for decl in schema.decls:
        _check_decl(schema, decl, types, generated)
    _check_cycles(schema, types)


def _claim(schema: Schema, generated: dict[str, int], name: str, line: int, col: int) -> None:
    if name in generated:
        raise ZapSyntaxError(
            schema.path, line, col,
            f"the generated name '{name}' clashes with a declaration at line {generated[name]}",
        )
    generated[name] = line


def _check_members(
    schema: Schema, members: tuple[Member, ...], what: str, *, params: bool = False
) -> None:
    seen: dict[str, Member] = {}
    for member in members:
        if not _MEMBER_NAME.fullmatch(member.name):
            raise ZapSyntaxError(
                schema.path, member.line, member.column,
                f"{what} name '{member.name}' must start with a letter",
            )
        py = member.py_name
        if params and py in _RESERVED_PARAMS:
            raise ZapSyntaxError(
                schema.path, member.line, member.column,
                f"{what} name '{member.name}' is reserved: generated clients take `{py}=`",
            )
        if py in seen:
            raise ZapSyntaxError(
                schema.path, member.line, member.column,
                f"{what} '{member.name}' duplicates '{seen[py].name}' at line {seen[py].line}",
            )
        seen[py] = member


def _check_decl(
    schema: Schema, decl: Decl, types: dict[str, Decl], generated: dict[str, int]
) -> None:
    what = {"struct": "field", "union": "variant", "enum": "enum value"}.get(decl.kind, "")
    if decl.kind in ("enum", "union") and not decl.members:
        raise ZapSyntaxError(
            schema.path, decl.line, decl.column, f"{decl.kind} '{decl.name}' needs a member"
        )
    _check_members(schema, decl.members, what)
    for member in decl.members:
        if member.type is not None:
            _resolve(schema, member.type, types)
        if decl.kind == "union":
            name = variant_class(decl.name, member.name)
            _claim(schema, generated, name, member.line, member.column)
    if decl.kind != "interface":
        return
    _claim(schema, generated, decl.name + "Client", decl.line, decl.column)
    _claim(schema, generated, decl.name + "RpcClient", decl.line, decl.column)
    seen: dict[str, int] = {}
    for method in decl.methods:
        _check_members(schema, (Member(method.name, None, method.line, method.column),), "method")
        if method.py_name in seen:
            raise ZapSyntaxError(
                schema.path, method.line, method.column,
                f"method '{method.name}' is already declared at line {seen[method.py_name]}",
            )
        seen[method.py_name] = method.line
        for suffix in ("Params", "Result"):
            _claim(schema, generated, method.type_stem + suffix, method.line, method.column)
        for group in (method.params, method.results):
            _check_members(schema, group, "parameter", params=group is method.params)
            for member in group:
                assert member.type is not None  # the parser always reads a type here
                _resolve(schema, member.type, types)


def _resolve(schema: Schema, ref: TypeRef, types: dict[str, Decl]) -> None:
    if ref.arg is not None:
        _resolve(schema, ref.arg, types)
        return
    if ref.name in PRIMITIVES:
        return
    decl = types.get(ref.name)
    if decl is None:
        close = difflib.get_close_matches(ref.name, [*types, *PRIMITIVES], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ZapSyntaxError(
            schema.path, ref.line, ref.column, f"unknown type '{ref.name}'{hint}"
        )
    if decl.kind == "interface":
        raise ZapSyntaxError(
            schema.path, ref.line, ref.column,
            f"interface '{ref.name}' cannot be used as a type",
        )


def _check_cycles(schema: Schema, types: dict[str, Decl]) -> None:
    """A struct that always contains itself has no finite default value; reject it."""
    composite = {name for name, decl in types.items() if decl.kind in ("struct", "union")}
    edges: dict[str, list[tuple[str, Member]]] = {}
    for decl in schema.decls:
        # Every field gets a default value, and a union defaults to its first variant,
        # so only those references (not List elements) must be acyclic.
        members = decl.members if decl.kind == "struct" else decl.members[:1]
        if decl.kind in ("struct", "union"):
            edges[decl.name] = [
                (m.type.name, m) for m in members
                if m.type is not None and m.type.arg is None and m.type.name in composite
            ]
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target, member in edges.get(name, []):
            if state.get(target) == 1:
                cycle = " -> ".join([*trail[trail.index(target) :], target])
                raise ZapSyntaxError(
                    schema.path, member.line, member.column,
                    f"'{target}' contains itself ({cycle}); wrap the field in List(...)",
                )
            if state.get(target) is None:
                visit(target, [*trail, target])
        state[name] = 2

    for name in edges:
        if state.get(name) is None:
            visit(name, [name])

