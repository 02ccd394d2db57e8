"""Split `.zap` text into logical lines of tokens; the grammar is line-oriented."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hanzocloud.zap.schema import ZapSyntaxError

# Token kinds: "ident", "number" (only in @version), "punct" ( ) , @ and "->".
_TOKEN = re.compile(
    r"(?P<ws>[ \t]+)|(?P<arrow>->)|(?P<punct>[(),@])"
    r"|(?P<number>[0-9]+(?:\.[0-9]+)*)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Line:
    """A physical line: its indent (spaces), tokens, and trailing comment (without `#`)."""

    number: int
    indent: int
    tokens: tuple[Token, ...]
    comment: str | None
    end_column: int

    @property
    def blank(self) -> bool:
        return not self.tokens and self.comment is None


def tokenize(text: str, *, path: str) -> list[Line]:
    """Every line of `text`, tokenized; tabs in indentation and stray characters are errors."""
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw.rstrip()
        stripped = body.lstrip(" ")
        indent = len(body) - len(stripped)
        if stripped.startswith("\t"):
            raise ZapSyntaxError(
                path, number, indent + 1, "tabs are not allowed for indentation; use spaces"
            )
        tokens: list[Token] = []
        comment: str | None = None
        pos = indent
        while pos < len(body):
            if body[pos] == "#":
                comment = body[pos + 1 :]
                break
            match = _TOKEN.match(body, pos)
            if match is None:
                raise ZapSyntaxError(path, number, pos + 1, f"unexpected character {body[pos]!r}")
            kind = match.lastgroup or ""
            if kind != "ws":
                kind = "punct" if kind == "arrow" else kind
                tokens.append(Token(kind, match.group(), number, pos + 1))
            pos = match.end()
        end = len(body) if comment is None else body.index("#", indent)
        lines.append(Line(number, indent, tuple(tokens), comment, len(body[:end].rstrip()) + 1))
    return lines


def describe(token: Token | None) -> str:
    """How an error message names a token: `'('`, `'foo'` or `end of line`."""
    return "end of line" if token is None else repr(token.text)
