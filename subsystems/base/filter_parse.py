"""PocketBase's filter language, parsed by a LALR grammar (lark) into a small immutable AST.

    expr       := or
    or         := and ("||" and)*
    and        := unary ("&&" unary)*
    unary      := "(" expr ")" | operand OP operand
    operand    := STRING | NUMBER | IDENT | call     (null, true, false are IDENTs here)
    call       := NAME "(" [operand ("," operand)*] ")"   geoDistance(…), strftime(…)
    OP         := = != > >= < <= ~ !~  and each of them prefixed by ? (any-of)
    IDENT      := [@]name(.name)*[:modifier]          e.g. author.name, @request.auth.id
                  @collection.name[:alias].field(.name)*[:modifier]

Strings are single- or double-quoted with backslash escapes; `//` starts a comment. The AST is
only data: `filter_sql.py` turns it into SQLAlchemy expressions with bound parameters (over
the values and operators of `filter_values.py`); `varies` tells whether a filter reads
anything that changes between requests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, VisitError

from hanzocloud.errors import InvalidArgument

MAX_FILTER = 3500
MAX_TERMS = 200
MAX_DEPTH = 32

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr ("||" and_expr)*
?and_expr: atom ("&&" atom)*
?atom: "(" or_expr ")"
     | operand OP operand -> comparison
?operand: STRING -> string
        | NUMBER -> number
        | IDENT -> ident
        | IDENT "(" [operand ("," operand)*] ")" -> call
OP: "?!~" | "?!=" | "?>=" | "?<=" | "?=" | "?>" | "?<" | "?~"
  | "!=" | ">=" | "<=" | "!~" | "=" | ">" | "<" | "~"
IDENT: /@?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?)*(:[A-Za-z]+)?/
STRING: /'(?:[^'\\]|\\.)*'/s | /"(?:[^"\\]|\\.)*"/s
NUMBER: /-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?/
COMMENT: /\/\/[^\n]*/
%import common.WS
%ignore WS
%ignore COMMENT
"""


@functools.cache
def _parser() -> Lark:
    """The LALR parser, built on first use rather than at import: building its tables is the
    costliest step of base's start (base warms it in a thread once the server is up; see
    `warm_up`). No lark cache file: that is a pickle in a shared temp folder."""
    return Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


def warm_up() -> None:
    """Build the parser now (safe from any thread)."""
    _parser()

_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
MODIFIERS = ("lower", "length", "isset", "each")


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal: str, int, float, bool or None."""

    value: Any


@dataclass(frozen=True, slots=True)
class Ident:
    """A field path (`author.name`) or macro (`@request.auth.id`, `@now`), with a modifier;
    `alias` names a separate join of `@collection.<name>:<alias>.…`."""

    path: tuple[str, ...]
    modifier: str = ""
    alias: str = ""

    @property
    def text(self) -> str:
        head = ".".join(self.path[:2]) + (f":{self.alias}" if self.alias else "")
        return ".".join((head, *self.path[2:])) + (f":{self.modifier}" if self.modifier else "")


@dataclass(frozen=True, slots=True)
class Call:
    """A function call: `geoDistance(lonA, latA, lonB, latB)`, `strftime(format, time, …)`."""

    name: str
    args: tuple[Operand, ...]


Operand = Lit | Ident | Call
FUNCTIONS = ("geoDistance", "strftime")
MAX_ARGS = 8


@dataclass(frozen=True, slots=True)
class Cmp:
    """`left op right`; `any_of` is the `?` prefix."""

    left: Operand
    op: str
    right: Operand
    any_of: bool = False


@dataclass(frozen=True, slots=True)
class Group:
    """`&&` (kind "and") or `||` (kind "or") over two or more children."""

    kind: str
    items: tuple[Node, ...]


Node = Cmp | Group


class _ToAst(Transformer[Token, Any]):
    @v_args(inline=True)
    def string(self, token: Token) -> Lit:
        return Lit(_ESCAPE.sub(r"\1", str(token)[1:-1]))

    @v_args(inline=True)
    def number(self, token: Token) -> Lit:
        text = str(token)
        if re.fullmatch(r"-?\d+", text) and abs(int(text)) < 2**63:
            return Lit(int(text))  # larger integers become floats: SQLite has 64-bit ints
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidArgument(f"invalid number {text[:40]} in filter")
        return Lit(value)

    @v_args(inline=True)
    def ident(self, token: Token) -> Lit | Ident:
        text = str(token)
        if text in ("null", "true", "false"):
            return Lit({"null": None, "true": True, "false": False}[text])
        parts = text.split(".")
        modifier = ""
        if ":" in parts[-1]:
            parts[-1], _, modifier = parts[-1].partition(":")
            if modifier not in MODIFIERS:
                raise InvalidArgument(f"unknown modifier ':{modifier}' in filter")
        alias = ""
        for i, part in enumerate(parts):
            if ":" not in part:
                continue
            if i != 1 or parts[0] != "@collection":  # only `@collection.<name>:<alias>`
                raise InvalidArgument(f"unexpected ':' in {text[:80]}")
            parts[1], _, alias = part.partition(":")
        return Ident(tuple(parts), modifier, alias)

    def call(self, items: list[Any]) -> Call:
        name, args = str(items[0]), tuple(items[1:])
        if name not in FUNCTIONS:
            raise InvalidArgument(f"unknown function '{name[:40]}' in filter; there are "
                                  f"{', '.join(FUNCTIONS)}")
        if len(args) > MAX_ARGS:
            raise InvalidArgument(f"{name} takes at most {MAX_ARGS} arguments")
        return Call(name, args)

    @v_args(inline=True)
    def comparison(self, left: Any, op: Token, right: Any) -> Cmp:
        text = str(op)
        return Cmp(left, text.lstrip("?"), right, any_of=text.startswith("?"))

    def or_expr(self, items: list[Node]) -> Group:
        return Group("or", tuple(items))

    def and_expr(self, items: list[Node]) -> Group:
        return Group("and", tuple(items))


def _measure(node: Node, depth: int = 0) -> int:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"filter nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, Cmp):
        return 1
    return sum(_measure(child, depth + 1) for child in node.items)


@functools.lru_cache(maxsize=2048)
def parse_filter(text: str) -> Node | None:
    """Parse a filter (or rule) string; None for an empty one; 400 for anything invalid."""
    if not isinstance(text, str):
        raise InvalidArgument("filter must be a string")
    if len(text) > MAX_FILTER:
        raise InvalidArgument(f"filter is longer than {MAX_FILTER} characters")
    if not text.strip():
        return None
    try:
        node = _ToAst().transform(_parser().parse(text))
    except VisitError as exc:  # raised by a transformer callback (e.g. an unknown modifier)
        if isinstance(exc.orig_exc, InvalidArgument):
            raise exc.orig_exc from None
        raise InvalidArgument("invalid filter", details={"filter": text[:200]}) from None
    except LarkError as exc:
        raise InvalidArgument(f"invalid filter: {_describe(exc)}",
                              details={"filter": text[:200]}) from None
    if _measure(node) > MAX_TERMS:
        raise InvalidArgument(f"filter has more than {MAX_TERMS} comparisons")
    return node  # type: ignore[no-any-return]


def _describe(exc: LarkError) -> str:
    column = getattr(exc, "column", None)
    where = f" at column {column}" if isinstance(column, int) and column > 0 else ""
    token = getattr(exc, "token", None)
    if token is not None and getattr(token, "type", "") == "$END":
        return "unexpected end of expression"
    if token is not None:
        return f"unexpected {str(token)[:40]!r}{where}"
    char = getattr(exc, "char", None)
    if char is not None:
        return f"unexpected character {char!r}{where}"
    return "syntax error" + where


def varies(text: str | None) -> bool:
    """Whether what `text` compiles to may change from one request of a caller to the next:
    it reads the clock (`@now`, `@todayStart`, `@hour`, …), the request's headers or query
    (`@request.headers.*`, `@request.query.*`), or `@request.context`. Raises
    InvalidArgument on a syntax error."""
    node = parse_filter(text or "")
    return node is not None and _walk(node, _varying)


def _varying(path: tuple[str, ...]) -> bool:
    if path[0] == "@request":
        return path[1:2] in (("headers",), ("query",), ("context",))
    return path[0].startswith("@") and path[0] != "@collection"  # a time macro


def _walk(node: Node | Operand, test: Callable[[tuple[str, ...]], bool]) -> bool:
    if isinstance(node, Group):
        return any(_walk(child, test) for child in node.items)
    if isinstance(node, Cmp):
        return _walk(node.left, test) or _walk(node.right, test)
    if isinstance(node, Call):
        return any(_walk(arg, test) for arg in node.args)
    return isinstance(node, Ident) and test(node.path)
