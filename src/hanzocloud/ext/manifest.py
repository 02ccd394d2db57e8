"""`extension.json`: the manifest every extension directory carries, validated strictly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from hanzocloud.ext.errors import InvalidExtension
from hanzocloud.ext.limits import KNOWN_CAPABILITIES

MANIFEST_FILE = "extension.json"
RESERVED_EXPORTS = frozenset({"memory", "alloc", "dealloc"})

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION_RE = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$")
EXPORT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MODULE_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.wasm$")


class Manifest(BaseModel):
    """The parsed `extension.json`: what the module is and what it may touch."""

    # Strings are strict (no coercion from numbers); lists are accepted for the tuples.
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(description="lowercase slug, unique per org")
    version: StrictStr = Field(description="semantic version, e.g. 1.2.0")
    runtime: StrictStr = Field(description="execution runtime; only 'wasm' exists today")
    module: StrictStr = Field(description="file name of the compiled module, next to the manifest")
    exports: tuple[StrictStr, ...] = Field(description="guest functions callable by the host")
    capabilities: tuple[StrictStr, ...] = Field(default=(), description="host imports requested")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9-]{0,62}$ (lowercase letters, digits, -)")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not VERSION_RE.fullmatch(value):
            raise ValueError("must be a semantic version like 1.0.0 or 1.0.0-beta.1")
        return value

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        if not MODULE_FILE_RE.fullmatch(value) or ".." in value:
            raise ValueError("must be a plain file name ending in .wasm, no directories")
        return value

    @field_validator("exports")
    @classmethod
    def _exports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one export")
        for export in value:
            if not EXPORT_RE.fullmatch(export):
                raise ValueError(f"{export!r} is not a valid export name")
            if export in RESERVED_EXPORTS:
                raise ValueError(f"{export!r} is part of the ABI and cannot be an entry point")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a name")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - KNOWN_CAPABILITIES)
        if unknown:
            known = ", ".join(sorted(KNOWN_CAPABILITIES))
            raise ValueError(f"unknown capability {unknown[0]!r} (known: {known})")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a capability")
        return value

    @property
    def ref(self) -> str:
        """`name@version`, how errors and logs name this extension."""
        return f"{self.name}@{self.version}"


def parse_manifest(data: Any, *, source: str = MANIFEST_FILE) -> Manifest:
    """Validate an already-decoded manifest; raise InvalidExtension listing every problem."""
    if not isinstance(data, dict):
        raise InvalidExtension(f"{source}: must be a JSON object", cause="manifest")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(root)"
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "tuple_type":
                message = "must be a list of strings"
            problems.append(f"{field}: {message}")
        raise InvalidExtension(
            f"{source}: " + "; ".join(problems),
            cause="manifest",
            details={"problems": problems},
        ) from None


def load_manifest(directory: Path) -> Manifest:
    """Read and validate `extension.json` from an extension directory."""
    path = directory / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidExtension(f"{path}: not found", cause="manifest") from None
    except OSError as exc:
        raise InvalidExtension(f"{path}: cannot read ({exc.strerror})", cause="manifest") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidExtension(f"{path}: not valid JSON ({exc})", cause="manifest") from None
    return parse_manifest(data, source=str(path))
