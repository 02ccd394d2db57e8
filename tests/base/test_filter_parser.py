"""The filter parser on its own: the AST it builds, and that no text escapes as a crash."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanzocloud.errors import InvalidArgument
from subsystems.base.filter_parse import Cmp, Group, Ident, Lit, parse_filter

CASES = [
    ("a = 1", Cmp(Ident(("a",)), "=", Lit(1))),
    ("a ?!~ 'x'", Cmp(Ident(("a",)), "!~", Lit("x"), any_of=True)),
    ('b.c:lower = "q\\"r"', Cmp(Ident(("b", "c"), "lower"), "=", Lit('q"r'))),
    ("@request.auth.id != null", Cmp(Ident(("@request", "auth", "id")), "!=", Lit(None))),
    ("a = true && (b = 2.5 || c = false)",
     Group("and", (Cmp(Ident(("a",)), "=", Lit(True)),
                   Group("or", (Cmp(Ident(("b",)), "=", Lit(2.5)),
                                Cmp(Ident(("c",)), "=", Lit(False))))))),
    ("  ", None),
]


@pytest.mark.parametrize(("text", "tree"), CASES, ids=[c[0] or "blank" for c in CASES])
def test_ast(text: str, tree: object) -> None:
    assert parse_filter(text) == tree


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_is_invalid_argument(text: str) -> None:
    # Any text either parses or raises InvalidArgument (a 400); nothing else escapes.
    with contextlib.suppress(InvalidArgument):
        parse_filter(text)
