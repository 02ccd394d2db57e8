"""Recursive-descent parser for `.zap` schemas (grammar in docs/zap.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hanzocloud.zap.lexer import Line, Token, describe, tokenize
from hanzocloud.zap.schema import (
    DECL_KEYWORDS,
    Decl,
    Member,
    Method,
    Schema,
    TypeRef,
    ZapSyntaxError,
)
from hanzocloud.zap.validate import validate

_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")


class _Cursor:
    """Walks the tokens of one line; errors point at the offending column."""

    def __init__(self, line: Line, path: str) -> None:
        self.line = line
        self.path = path
        self.pos = 0

    def peek(self) -> Token | None:
        return self.line.tokens[self.pos] if self.pos < len(self.line.tokens) else None

    def error(self, message: str, token: Token | None = None) -> ZapSyntaxError:
        token = token or self.peek()
        column = token.column if token else self.line.end_column
        return ZapSyntaxError(self.path, self.line.number, column, message)

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end of line")
        self.pos += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.peek()
        if token is None or token.text != text:
            raise self.error(f"expected '{text}', got {describe(token)}")
        self.pos += 1
        return token

    def ident(self, what: str) -> Token:
        token = self.peek()
        if token is None or token.kind != "ident":
            raise self.error(f"expected {what}, got {describe(token)}")
        self.pos += 1
        return token

    def end(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.error(f"expected end of line, got {describe(token)}")

    def type_ref(self) -> TypeRef:
        token = self.peek()
        if token is None or token.kind != "ident":
            raise self.error(f"expected a type, got {describe(token)}")
        self.pos += 1
        if token.text != "List":
            return TypeRef(token.text, None, token.line, token.column)
        self.expect("(")
        arg = self.type_ref()
        self.expect(")")
        return TypeRef("List", arg, token.line, token.column)

    def members(self) -> tuple[Member, ...]:
        """`(name Type, name Type)`, possibly `()`."""
        self.expect("(")
        out: list[Member] = []
        first = self.peek()
        if first is not None and first.text == ")":
            self.pos += 1
            return ()
        while True:
            name = self.ident("a parameter name")
            out.append(Member(name.text, self.type_ref(), name.line, name.column))
            token = self.peek()
            if token is not None and token.text == ",":
                self.pos += 1
                continue
            if token is not None and token.text == ")":
                self.pos += 1
                return tuple(out)
            raise self.error(f"expected ',' or ')', got {describe(token)}")


@dataclass
class _Open:
    """A declaration whose member lines are still being read."""

    kind: str
    name: str
    line: int
    column: int
    doc: str
    indent: int = 0
    members: list[Member] = field(default_factory=list)
    methods: list[Method] = field(default_factory=list)

    def close(self) -> Decl:
        return Decl(
            self.kind, self.name, self.line, self.column,
            tuple(self.members), tuple(self.methods), self.doc,
        )


def _doc(comments: list[str]) -> str:
    return "\n".join(c.strip() for c in comments).strip()


def parse(text: str, *, path: str = "<schema>", name: str | None = None) -> Schema:
    """Parse and validate one schema; raises ZapSyntaxError naming line and column."""
    lines = tokenize(text, path=path)
    version: str | None = None
    decls: list[Decl] = []
    current: _Open | None = None
    comments: list[str] = []
    for line in lines:
        if not line.tokens:
            # A blank line detaches the comments above it from the next declaration.
            comments = comments + [line.comment] if line.comment is not None else []
            continue
        cur = _Cursor(line, path)
        doc = _doc(comments) or (line.comment or "").strip()
        comments = []
        if line.indent == 0:
            if current is not None:
                decls.append(current.close())
                current = None
            first = cur.peek()
            if first is not None and first.text == "@":
                version = _directive(cur, version, bool(decls))
                continue
            current = _declaration(cur, doc)
            continue
        if current is None:
            raise ZapSyntaxError(path, line.number, 1, "unexpected indentation")
        if current.indent == 0:
            current.indent = line.indent
        elif line.indent != current.indent:
            raise ZapSyntaxError(
                path, line.number, line.indent + 1,
                f"inconsistent indentation: expected {current.indent} spaces, got {line.indent}",
            )
        if current.kind == "interface":
            current.methods.append(_method(cur, doc))
        else:
            current.members.append(_member(cur, current.kind, doc))
    if current is not None:
        decls.append(current.close())
    stem = name or Path(path).stem
    schema = Schema(stem, path, version, tuple(decls))
    validate(schema)
    return schema


def _directive(cur: _Cursor, version: str | None, after_decls: bool) -> str:
    at = cur.expect("@")
    word = cur.ident("a directive name")
    if word.text != "version":
        raise cur.error(f"unknown directive '@{word.text}'", word)
    if version is not None or after_decls:
        raise cur.error("@version must appear once, before any declaration", at)
    number = cur.peek()
    if number is None or number.kind != "number" or not _VERSION.fullmatch(number.text):
        raise cur.error(f"expected a version like 1.2.0, got {describe(number)}")
    cur.pos += 1
    cur.end()
    return number.text


def _declaration(cur: _Cursor, doc: str) -> _Open:
    keyword = cur.ident("'struct', 'enum', 'union' or 'interface'")
    if keyword.text not in DECL_KEYWORDS:
        raise cur.error(
            f"expected 'struct', 'enum', 'union' or 'interface', got '{keyword.text}'", keyword
        )
    name = cur.ident(f"a name for the {keyword.text}")
    cur.end()
    return _Open(keyword.text, name.text, name.line, name.column, doc)


def _member(cur: _Cursor, kind: str, doc: str) -> Member:
    what = {"struct": "a field name", "union": "a variant name", "enum": "an enum value"}
    name = cur.ident(what[kind])
    type_ref = None if kind == "enum" else cur.type_ref()
    cur.end()
    return Member(name.text, type_ref, name.line, name.column, doc)


def _method(cur: _Cursor, doc: str) -> Method:
    name = cur.ident("a method name")
    params = cur.members()
    cur.expect("->")
    results = cur.members()
    cur.end()
    return Method(name.text, params, results, name.line, name.column, doc)


def parse_file(path: Path, *, display: str | None = None) -> Schema:
    """Parse `path`; errors name it as `display` (default: the file name)."""
    return parse(path.read_text(encoding="utf-8"), path=display or path.name, name=path.stem)
