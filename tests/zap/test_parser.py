"""The .zap parser: what it accepts, and errors that name file, line and column."""

from __future__ import annotations

import pytest

from hanzocloud.zap.compat import describe
from hanzocloud.zap.fmt import format_schema
from hanzocloud.zap.parser import parse
from hanzocloud.zap.schema import ZapSyntaxError, py_identifier, snake_case

GOOD = """\
@version 1.2.0
# The verified claims.
struct Claims
  sub      Text
  owner    Text      # the org slug: the tenant
  roles    List(Text)
  isAdmin  Bool

interface Iam
  verifyJwt (token Text) -> (claims Claims)
  getOrg (slug Text) -> (org Claims, found Bool)
  ping () -> ()
"""


def test_parses_spec_example() -> None:
    schema = parse(GOOD, path="iam.zap")
    assert schema.name == "iam" and schema.version == "1.2.0"
    claims = schema.get("Claims")
    assert claims is not None and claims.doc == "The verified claims."
    assert [m.name for m in claims.members] == ["sub", "owner", "roles", "isAdmin"]
    assert claims.members[1].doc == "the org slug: the tenant"
    assert claims.members[2].type is not None
    assert claims.members[2].type.spelling() == "List(Text)"
    iam = schema.get("Iam")
    assert iam is not None
    assert [(m.name, len(m.params), len(m.results)) for m in iam.methods] == [
        ("verifyJwt", 1, 1),
        ("getOrg", 1, 2),
        ("ping", 0, 0),
    ]


ERRORS = [
    ("paren-instead-of-type", "struct A\n  roles  (Text)\n", 2, 10, "expected a type, got '('"),
    (
        "unknown-type",
        "struct A\n  x Claim\nstruct Claims\n",
        2,
        5,
        "unknown type 'Claim'; did you mean 'Claims'?",
    ),
    ("lowercase-type-name", "struct claims\n", 1, 8, "must start with a capital letter"),
    (
        "bad-keyword",
        "strukt A\n",
        1,
        1,
        "expected 'struct', 'enum', 'union' or 'interface', got 'strukt'",
    ),
    ("missing-name", "struct\n", 1, 7, "expected a name for the struct, got end of line"),
    ("unclosed-list", "struct A\n  x List(Text\n", 2, 14, "expected ')', got end of line"),
    ("list-needs-arg", "struct A\n  x List\n", 2, 9, "expected '(', got end of line"),
    ("trailing-junk", "struct A\n  x Text Bool\n", 2, 10, "expected end of line, got 'Bool'"),
    (
        "params-bad-sep",
        "interface I\n  f (a Text b Text) -> ()\n",
        2,
        13,
        "expected ',' or ')', got 'b'",
    ),
    ("missing-arrow", "interface I\n  f (a Text) (b Text)\n", 2, 14, "expected '->', got '('"),
    ("missing-results", "interface I\n  f (a Text) ->\n", 2, 16, "expected '(', got end of line"),
    ("tab-indent", "struct A\n\tx Text\n", 2, 1, "tabs are not allowed"),
    ("stray-char", "struct A\n  x Text!\n", 2, 9, "unexpected character '!'"),
    ("indent-at-top", "  x Text\n", 1, 1, "unexpected indentation"),
    ("inconsistent-indent", "struct A\n  x Text\n    y Text\n", 3, 5, "inconsistent indentation"),
    ("duplicate-type", "struct A\nenum A\n  x\n", 2, 6, "'A' is already declared at line 1"),
    ("duplicate-field", "struct A\n  x Text\n  x Bool\n", 3, 3, "duplicates 'x' at line 2"),
    ("snake-collision", "struct A\n  fooBar Text\n  foo_bar Text\n", 3, 3, "duplicates 'fooBar'"),
    ("keyword-clash", "struct A\n  class Text\n  class_ Text\n", 3, 3, "duplicates 'class'"),
    ("timeout-param", "interface I\n  f (timeout Int32) -> ()\n", 2, 6, "generated clients take"),
    ("builtin-redeclared", "struct Text\n", 1, 8, "'Text' is a built-in type"),
    ("interface-as-type", "interface I\nstruct A\n  x I\n", 3, 5, "cannot be used as a type"),
    ("empty-enum", "enum E\n", 1, 6, "needs a member"),
    ("self-containing", "struct A\n  b B\nstruct B\n  a A\n", 4, 3, "contains itself"),
    ("generated-clash", "struct GetParams\ninterface I\n  get () -> ()\n", 3, 3, "clashes"),
    ("version-late", "struct A\n@version 1.0\n", 2, 1, "@version must appear once"),
    ("version-bad", "@version one\n", 1, 10, "expected a version like 1.2.0"),
    ("unknown-directive", "@import x\n", 1, 2, "unknown directive '@import'"),
]


@pytest.mark.parametrize(
    ("source", "line", "column", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_name_line_and_column(source: str, line: int, column: int, message: str) -> None:
    with pytest.raises(ZapSyntaxError) as info:
        parse(source, path="t.zap")
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert message in err.message
    assert str(err).startswith(f"t.zap:{line}:{column}: ")


def test_error_format_matches_documentation() -> None:
    with pytest.raises(ZapSyntaxError, match=r"^iam\.zap:4:9: expected a type, got '\('$"):
        parse("struct Claims\n  sub  Text\n\n  roles (Text)\n", path="iam.zap")


@pytest.mark.parametrize(
    ("camel", "snake"),
    [
        ("verifyJwt", "verify_jwt"),
        ("isAdmin", "is_admin"),
        ("getHTTPCode", "get_http_code"),
        ("id", "id"),
        ("already_snake", "already_snake"),
        ("userID", "user_id"),
    ],
)
def test_snake_case(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake


@pytest.mark.parametrize(
    ("name", "python"),
    [
        ("class", "class_"),
        ("bytes", "bytes_"),
        ("list", "list_"),
        ("self", "self_"),
        ("from", "from_"),
        ("type", "type"),
        ("isAdmin", "is_admin"),
    ],
)
def test_python_names_never_shadow(name: str, python: str) -> None:
    assert py_identifier(name) == python


def test_fmt_is_canonical_and_idempotent() -> None:
    messy = (
        "@version   1.2.0\n#  The claims\nstruct Claims\n    sub Text\n    owner    Text  #org\n"
        "    roles List( Text )\n\n\n\ninterface Iam\n"
        "   verifyJwt(token Text,b List(Int8))->(c Claims)\n"
    )
    once = format_schema(messy, path="iam.zap")
    assert once == (
        "@version 1.2.0\n# The claims\nstruct Claims\n  sub    Text\n  owner  Text        # org\n"
        "  roles  List(Text)\n\ninterface Iam\n"
        "  verifyJwt (token Text, b List(Int8)) -> (c Claims)\n"
    )
    assert format_schema(once) == once
    assert describe(parse(once)) == describe(parse(messy))


def test_fmt_refuses_invalid_schema() -> None:
    with pytest.raises(ZapSyntaxError):
        format_schema("struct A\n  x Nope\n")
