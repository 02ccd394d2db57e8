"""Settings: flags > `CLOUD_*` environment > optional TOML file, validated into one frozen object.

Every way a setting can be wrong is caught here and reported as a one-line `ConfigError`,
which the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanzocloud.errors import ConfigError
from hanzocloud.registry import CLIENT_NAMES, SUBSYSTEM_NAMES

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# name → (env var, default, kind). The order is the order of `--help`.
OPTIONS: dict[str, tuple[str, Any, str]] = {
    "enable": ("CLOUD_ENABLE", "all", "str"),
    "brand": ("CLOUD_BRAND", "hanzo", "str"),
    "brand_file": ("CLOUD_BRAND_FILE", None, "path"),
    "domain": ("CLOUD_DOMAIN", "localhost", "str"),
    "iam_issuer": ("CLOUD_IAM_ISSUER", None, "str"),
    "kms_master_key_ref": ("CLOUD_KMS_MASTER_KEY_REF", None, "str"),
    "data_dir": ("CLOUD_DATA_DIR", "./data", "path"),
    "listen": ("CLOUD_LISTEN", ":8080", "str"),
    "zap_listen": ("CLOUD_ZAP_LISTEN", ":9653", "str"),
    "health_listen": ("CLOUD_HEALTH_LISTEN", ":9090", "str"),
    "admin_listen": ("CLOUD_ADMIN_LISTEN", ":8081", "str"),
    "dev": ("CLOUD_DEV", False, "bool"),
    "body_limit": ("CLOUD_BODY_LIMIT", 10 * 1024 * 1024, "int"),
    "header_limit": ("CLOUD_HEADER_LIMIT", 64 * 1024, "int"),
    "header_timeout": ("CLOUD_HEADER_TIMEOUT", 30.0, "float"),
    "trusted_proxies": ("CLOUD_TRUSTED_PROXIES", "", "str"),
    "shutdown_timeout": ("CLOUD_SHUTDOWN_TIMEOUT", 30.0, "float"),
    "tenant_cache_size": ("CLOUD_TENANT_CACHE_SIZE", 256, "int"),
    "tenant_idle_seconds": ("CLOUD_TENANT_IDLE_SECONDS", 300.0, "float"),
    "tenant_read_budget_ms": ("CLOUD_TENANT_READ_BUDGET_MS", 20.0, "float"),
    "tenant_write_budget_ms": ("CLOUD_TENANT_WRITE_BUDGET_MS", 20.0, "float"),
    # Durability replicator (hanzocloud.replicate); off when no URL (the CLI's --dev picks one).
    "replicate_url": ("CLOUD_REPLICATE_URL", None, "str"),
    "replicate_wal_hours": ("CLOUD_REPLICATE_WAL_HOURS", 72.0, "float"),
    "replicate_snapshot_days": ("CLOUD_REPLICATE_SNAPSHOT_DAYS", 30.0, "float"),
    "replicate_lease_seconds": ("CLOUD_REPLICATE_LEASE_SECONDS", 15.0, "float"),
    "log_level": ("CLOUD_LOG_LEVEL", "info", "str"),
    "ext_dir": ("CLOUD_EXT_DIR", None, "path"),
    "ext_capabilities": ("CLOUD_EXT_CAPABILITIES", "", "str"),
    "ext_http_allow": ("CLOUD_EXT_HTTP_ALLOW", "", "str"),
}

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class Address:
    """A listen address; port 0 asks the OS for a free port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, *, option: str) -> Address:
    """Parse `:8080`, `127.0.0.1:8080`, `[::1]:8080` or `host:port`."""
    match = _HOST_PORT.match(text.strip())
    if match is None:
        raise ConfigError(f"--{option.replace('_', '-')}: malformed address '{text}' "
                          "(expected HOST:PORT or :PORT)")
    port = int(match["port"])
    if port > 65535:
        raise ConfigError(f"--{option.replace('_', '-')}: port {port} is out of range (0-65535)")
    host = match["host"].strip("[]") or "0.0.0.0"
    return Address(host, port)


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration of one process, validated and frozen."""

    enabled: tuple[str, ...]
    brand: str
    brand_file: Path | None
    domain: str
    iam_issuer: str | None
    kms_master_key_ref: str | None
    data_dir: Path
    listen: Address
    zap_listen: Address
    health_listen: Address
    admin_listen: Address
    dev: bool
    body_limit: int
    header_limit: int
    header_timeout: float
    shutdown_timeout: float
    tenant_cache_size: int
    tenant_idle_seconds: float
    tenant_read_budget_ms: float
    tenant_write_budget_ms: float
    replicate_url: str | None
    replicate_wal_hours: float
    replicate_snapshot_days: float
    replicate_lease_seconds: float
    log_level: str
    ext_dir: Path | None = None
    ext_capabilities: str = ""
    ext_http_allow: str = ""
    trusted_proxies: tuple[str, ...] = ()
    zap_addrs: Mapping[str, str] = field(default_factory=dict)

    def is_enabled(self, name: str) -> bool:
        return name in self.enabled


def parse_enable(text: str, known: Sequence[str] = SUBSYSTEM_NAMES) -> tuple[str, ...]:
    """`all` or empty means every subsystem; otherwise a comma list, in host order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or names == ["all"]:
        return tuple(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        valid = ", ".join(known) or "(none in this build)"
        raise ConfigError(f"--enable: unknown subsystem '{unknown[0]}'; valid names: "
                          f"{valid} (or 'all')")
    return tuple(n for n in known if n in names)


def parse_proxies(text: str) -> tuple[str, ...]:
    """`--trusted-proxies`: a comma list of IP addresses and CIDR networks, normalised
    (`10.1.2.3/8` is `10.0.0.0/8`). Empty trusts no one."""
    networks = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ConfigError(f"--trusted-proxies: '{entry}' is not an IP address or a network "
                              "(like 10.0.0.0/8 or fd00::/8)") from None
    return tuple(dict.fromkeys(networks))


def _coerce(name: str, kind: str, value: Any, origin: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str | os.PathLike) and "\x00" in os.fspath(value):
        # No setting may hold a NUL byte; as a path it would fail later with a traceback.
        raise ConfigError(f"{origin}: bad value {value!r} for {name} (contains a NUL byte)")
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if not math.isfinite(number):  # `nan` passes every range check below
                raise ConfigError(f"{origin}: bad value {value!r} for {name} "
                                  "(expected a finite number)")
            return number
        if kind == "path":
            if not isinstance(value, str | os.PathLike):
                raise ValueError(value)
            return Path(value).expanduser()
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: bad value {value!r} for {name} (expected {kind})") from None


def read_toml(path: Path, *, option: str) -> dict[str, Any]:
    """Parse a TOML file, or raise a one-line ConfigError naming the option it came from."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{option}: {path} is not UTF-8 text (expected a TOML file)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{option}: {path} is not valid TOML: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    data = read_toml(path, option="--config")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in OPTIONS:
            raise ConfigError(f"--config: unknown setting '{key}' in {path}")
        if name in ("enable", "trusted_proxies") and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[name] = value
    return out


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--data-dir: {path} is not writable ({exc.strerror}); "
                          "choose another --data-dir or fix its permissions") from None


def load_settings(
    flags: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    known: Sequence[str] = SUBSYSTEM_NAMES,
) -> Settings:
    """Merge flags (values that are not None), env and the TOML file, then validate."""
    env = os.environ if environ is None else environ
    file_values = _read_toml(config_file) if config_file is not None else {}
    merged: dict[str, Any] = {}
    for name, (var, default, kind) in OPTIONS.items():
        if flags.get(name) is not None:
            merged[name] = _coerce(name, kind, flags[name], f"--{name.replace('_', '-')}")
        elif var in env:
            merged[name] = _coerce(name, kind, env[var], var)
        elif name in file_values:
            merged[name] = _coerce(name, kind, file_values[name], f"config {name}")
        else:
            merged[name] = _coerce(name, kind, default, "default")
    enabled = parse_enable(merged.pop("enable"), known)
    merged["trusted_proxies"] = parse_proxies(merged["trusted_proxies"])
    for name in ("listen", "zap_listen", "health_listen", "admin_listen"):
        merged[name] = parse_address(merged[name], option=name)
    if merged["body_limit"] <= 0:
        raise ConfigError("--body-limit must be a positive number of bytes")
    if merged["header_limit"] < 1024:
        raise ConfigError("--header-limit must be at least 1024 bytes")
    if merged["header_timeout"] <= 0:
        raise ConfigError("--header-timeout must be a positive number of seconds")
    if merged["shutdown_timeout"] <= 0:
        raise ConfigError("--shutdown-timeout must be a positive number of seconds")
    if str(merged["log_level"]).lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level: unknown level {merged['log_level']!r}; use one of "
                          f"{', '.join(LOG_LEVELS)}")
    if merged["tenant_cache_size"] < 1:
        raise ConfigError("--tenant-cache-size must be at least 1")
    if merged["tenant_idle_seconds"] < 0:
        raise ConfigError("--tenant-idle-seconds must be 0 (close at once) or more seconds")
    if merged["tenant_read_budget_ms"] < 0:
        raise ConfigError("--tenant-read-budget-ms must be 0 (never move reads) or more")
    if merged["tenant_write_budget_ms"] < 0:
        raise ConfigError("--tenant-write-budget-ms must be 0 (never move writes) or more")
    for name in ("replicate_wal_hours", "replicate_snapshot_days", "replicate_lease_seconds"):
        if merged[name] <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number")
    if merged["replicate_snapshot_days"] * 24 < merged["replicate_wal_hours"]:
        # A point-in-time restore starts from a snapshot taken before the moment.
        raise ConfigError("--replicate-snapshot-days must cover --replicate-wal-hours (snapshots "
                          "kept for less time than WAL leave restores inside the WAL window "
                          "nothing to start from)")
    if not merged["dev"] and not merged["kms_master_key_ref"]:
        raise ConfigError("no master key: pass --kms-master-key-ref=env:VAR|file:PATH|kms://… "
                          "(or CLOUD_KMS_MASTER_KEY_REF), or --dev for a local development key")
    _check_data_dir(merged["data_dir"])
    zap_addrs = {
        name: env[f"CLOUD_{name.upper()}_ZAP_ADDR"]
        for name in (*known, *CLIENT_NAMES)
        if env.get(f"CLOUD_{name.upper()}_ZAP_ADDR")
    }
    return Settings(enabled=enabled, zap_addrs=zap_addrs, **merged)


def flag_names() -> Sequence[str]:
    """The long flag names the server accepts, for the CLI parser."""
    return [f"--{name.replace('_', '-')}" for name in OPTIONS]
