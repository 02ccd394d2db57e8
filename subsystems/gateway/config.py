"""The gateway's settings, read once at mount from `CLOUD_GATEWAY_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from hanzocloud.errors import ConfigError

CLASSES = ("read", "write", "auth", "anon")
# Generous by default: a deployment tightens them; tests and demos are never throttled.
DEFAULT_LIMITS = {"read": (1000.0, 2000.0), "write": (300.0, 600.0), "auth": (50.0, 100.0),
                  "anon": (200.0, 400.0)}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Token cache bounds, the revocation window, rate limits per route class, JWKS fetching."""

    cache_size: int = 10_000
    revocation_window: float = 30.0     # a cached verification is trusted at most this long
    limits: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_LIMITS))   # class → (tokens per second, burst)
    buckets: int = 100_000              # most rate-limit buckets kept in memory
    jwks_ttl: float = 300.0             # remote issuer mode: refetch keys this often
    jwks_min_refetch: float = 30.0      # … and at most this often on an unknown kid
    audience: str = ""                  # expected `aud`; empty: the issuer


def _number(env: Mapping[str, str], var: str, default: float, *, minimum: float) -> float:
    if var not in env:
        return default
    try:
        value = float(env[var])
    except ValueError:
        raise ConfigError(f"{var}: expected a number, got {env[var]!r}") from None
    if value < minimum:
        raise ConfigError(f"{var}: must be at least {minimum:g}, got {env[var]!r}")
    return value


def _limit(env: Mapping[str, str], cls: str) -> tuple[float, float]:
    var = f"CLOUD_GATEWAY_RATE_{cls.upper()}"
    if var not in env:
        return DEFAULT_LIMITS[cls]
    rate_text, _, burst_text = env[var].partition(":")
    try:
        rate = float(rate_text)
        burst = float(burst_text) if burst_text else rate
    except ValueError:
        raise ConfigError(f"{var}: expected RATE[:BURST] (requests per second), "
                          f"got {env[var]!r}") from None
    if rate <= 0 or burst < 1:
        raise ConfigError(f"{var}: rate must be positive and burst at least 1")
    return rate, burst


def load_config(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read `CLOUD_GATEWAY_*`; a bad value is one sentence naming the variable."""
    env = os.environ if environ is None else environ
    return GatewayConfig(
        cache_size=int(_number(env, "CLOUD_GATEWAY_CACHE_SIZE", 10_000, minimum=1)),
        revocation_window=_number(env, "CLOUD_GATEWAY_REVOCATION_WINDOW", 30.0, minimum=0),
        limits={cls: _limit(env, cls) for cls in CLASSES},
        buckets=int(_number(env, "CLOUD_GATEWAY_BUCKETS", 100_000, minimum=1)),
        jwks_ttl=_number(env, "CLOUD_GATEWAY_JWKS_TTL", 300.0, minimum=1),
        jwks_min_refetch=_number(env, "CLOUD_GATEWAY_JWKS_MIN_REFETCH", 30.0, minimum=0),
        audience=env.get("CLOUD_IAM_AUDIENCE", "").strip(),
    )
