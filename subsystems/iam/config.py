"""iam's own settings, read once at mount from `CLOUD_IAM_*` environment variables.

The host's flags cover what every deployment sets (issuer, domain, brand); these are tuning
knobs with safe defaults. A bad value stops startup with a sentence naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hanzocloud.errors import ConfigError

ALGORITHMS = ("RS256", "ES256", "EdDSA")


@dataclass(frozen=True, slots=True)
class IamConfig:
    """Token lifetimes, signing algorithm, rotation schedule and login throttling."""

    alg: str = "RS256"
    audience: str = ""              # empty: the issuer itself is the API audience
    access_ttl: int = 900
    id_ttl: int = 900
    refresh_ttl: int = 30 * 86400
    code_ttl: int = 60
    rotate_interval: float = 30 * 86400.0
    rotate_check: float = 60.0      # how often the scheduler looks at the active key's age
    key_reload: float = 10.0        # how often a server re-reads keys (CLI rotations)
    throttle_free: int = 5          # failed logins allowed before backoff starts
    throttle_base: float = 1.0      # first backoff, doubled per further failure
    throttle_max: float = 900.0
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536


_INTS = {"access_ttl": "ACCESS_TTL", "id_ttl": "ID_TTL", "refresh_ttl": "REFRESH_TTL",
         "code_ttl": "CODE_TTL", "throttle_free": "THROTTLE_FREE",
         "argon2_time_cost": "ARGON2_TIME_COST", "argon2_memory_kib": "ARGON2_MEMORY_KIB"}
_FLOATS = {"rotate_interval": "ROTATE_INTERVAL", "rotate_check": "ROTATE_CHECK",
           "key_reload": "KEY_RELOAD", "throttle_base": "THROTTLE_BASE",
           "throttle_max": "THROTTLE_MAX"}


def load_config(environ: Mapping[str, str] | None = None) -> IamConfig:
    """Read `CLOUD_IAM_*` variables; raise ConfigError naming the first bad one."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    alg = env.get("CLOUD_IAM_ALG", "RS256").strip()
    match = {a.lower(): a for a in ALGORITHMS}.get(alg.lower())
    if match is None:
        raise ConfigError(f"CLOUD_IAM_ALG: unknown algorithm '{alg}'; use one of "
                          f"{', '.join(ALGORITHMS)}")
    values["alg"] = match
    values["audience"] = env.get("CLOUD_IAM_AUDIENCE", "").strip()
    for field, suffix in _INTS.items():
        var = f"CLOUD_IAM_{suffix}"
        if var in env:
            try:
                number = int(env[var])
            except ValueError:
                raise ConfigError(f"{var}: expected a whole number, got {env[var]!r}") from None
            if number < (1 if field.endswith("ttl") else 0):
                raise ConfigError(f"{var}: must be positive, got {env[var]!r}")
            values[field] = number
    for field, suffix in _FLOATS.items():
        var = f"CLOUD_IAM_{suffix}"
        if var in env:
            try:
                seconds = float(env[var])
            except ValueError:
                raise ConfigError(f"{var}: expected a number of seconds, "
                                  f"got {env[var]!r}") from None
            if seconds <= 0:
                raise ConfigError(f"{var}: must be positive, got {env[var]!r}")
            values[field] = seconds
    return IamConfig(**values)  # type: ignore[arg-type]


def api_audience(config: IamConfig, issuer: str) -> str:
    """The audience every access token carries and every verifier expects."""
    return config.audience or issuer
