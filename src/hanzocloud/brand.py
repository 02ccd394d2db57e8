"""Brands: the display name, domain, issuer, colours and contacts a deployment wears.

Brand definitions are data (`brands/*.toml` in the package, or `--brand-file`); no logic
anywhere branches on which brand is active.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hanzocloud.errors import ConfigError


class Colors(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    primary: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")
    accent: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")
    background: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")


class Brand(BaseModel):
    """One brand definition; `public()` is what `GET /v1/brand` shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    display_name: str = Field(min_length=1, max_length=120)
    domain: str = Field(min_length=1, max_length=253)
    default_issuer: str = Field(min_length=1)
    logo_url: str = ""
    support_email: str = ""
    colors: Colors
    cors_origins: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        """The part of the brand any anonymous client may see."""
        return {
            "name": self.name,
            "displayName": self.display_name,
            "domain": self.domain,
            "issuer": self.default_issuer,
            "logoUrl": self.logo_url,
            "supportEmail": self.support_email,
            "colors": self.colors.model_dump(),
        }


def builtin_brands() -> list[str]:
    """Names of the brands shipped inside the package."""
    folder = resources.files("hanzocloud") / "brands"
    names = (p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    return sorted(names)


def _parse(text: str, origin: str) -> Brand:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"brand file {origin} is not valid TOML: {exc}") from None
    try:
        return Brand.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ConfigError(f"brand file {origin}: {where}: {first['msg']}") from None


def load_brand(name: str, *, brand_file: Path | None = None) -> Brand:
    """Load a custom brand file if given, else the named built-in brand."""
    if brand_file is not None:
        try:
            text = brand_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read --brand-file {brand_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--brand-file {brand_file} is not UTF-8 text (expected a TOML "
                              "brand definition)") from None
        return _parse(text, str(brand_file))
    known = builtin_brands()
    if name not in known:
        raise ConfigError(f"unknown brand '{name}'; known brands: {', '.join(known)} "
                          "(or pass --brand-file)")
    text = (resources.files("hanzocloud") / "brands" / f"{name}.toml").read_text("utf-8")
    return _parse(text, f"{name}.toml")
