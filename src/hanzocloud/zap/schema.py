"""The parsed form of a `.zap` schema: declarations, members and type references."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

INT_RANGES: dict[str, tuple[int, int]] = {
    "Int8": (-(2**7), 2**7 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt8": (0, 2**8 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
}
PRIMITIVES = frozenset({"Bool", "Float32", "Float64", "Text", "Data", "Bytes", *INT_RANGES})
BUILTIN_TYPE_NAMES = PRIMITIVES | {"List"}
DECL_KEYWORDS = ("struct", "enum", "union", "interface")


class ZapSyntaxError(Exception):
    """A schema that does not parse or does not resolve; names file, line and column."""

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {message}")
        self.path = path
        self.line = line
        self.column = column
        self.message = message


@dataclass(frozen=True, slots=True)
class TypeRef:
    """A type as written: a primitive, `List(T)`, or the name of a declared type."""

    name: str
    arg: TypeRef | None = None
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    def spelling(self) -> str:
        """The canonical text of the type; `Bytes` is spelled `Data` (same wire type)."""
        if self.arg is not None:
            return f"{self.name}({self.arg.spelling()})"
        return "Data" if self.name == "Bytes" else self.name


@dataclass(frozen=True, slots=True)
class Member:
    """A struct field, union variant, enum value (type None) or method parameter/result."""

    name: str
    type: TypeRef | None
    line: int
    column: int
    doc: str = ""

    @property
    def py_name(self) -> str:
        return py_identifier(self.name)


@dataclass(frozen=True, slots=True)
class Method:
    """One interface method: ordered params and results."""

    name: str
    params: tuple[Member, ...]
    results: tuple[Member, ...]
    line: int
    column: int
    doc: str = ""

    @property
    def py_name(self) -> str:
        return py_identifier(self.name)

    @property
    def type_stem(self) -> str:
        """`createIntent` -> `CreateIntent`: the prefix of its Params/Result structs."""
        return self.name[:1].upper() + self.name[1:]


@dataclass(frozen=True, slots=True)
class Decl:
    """A top-level declaration; `kind` is struct, enum, union or interface."""

    kind: str
    name: str
    line: int
    column: int
    members: tuple[Member, ...] = ()
    methods: tuple[Method, ...] = ()
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Schema:
    """One `.zap` file: its stem name, display path, optional version and declarations."""

    name: str
    path: str
    version: str | None
    decls: tuple[Decl, ...]

    def get(self, name: str) -> Decl | None:
        """The declaration called `name`, if any."""
        for decl in self.decls:
            if decl.name == name:
                return decl
        return None


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`verifyJwt` -> `verify_jwt`, `getHTTPCode` -> `get_http_code`: the Python spelling."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


# Names generated class bodies use in annotations (a member called `bytes` would shadow the
# type for every later annotation in that class), plus the generated module's imports.
_SHADOWING = frozenset(
    {"bool", "bytes", "float", "int", "list", "str", "enum", "msgspec", "typing", "zap", "self"}
)


def py_identifier(name: str) -> str:
    """The Python name of a member: snake_case, plus `_` if it would clash (`class_`, `bytes_`)."""
    snake = snake_case(name)
    return snake + "_" if keyword.iskeyword(snake) or snake in _SHADOWING else snake
