"""Per-call limits and the names of the capabilities a guest may request."""

from __future__ import annotations

from dataclasses import dataclass

WASM_PAGE = 65536

CAPABILITY_HTTP = "http"
CAPABILITY_KV = "kv"
KNOWN_CAPABILITIES: frozenset[str] = frozenset({CAPABILITY_HTTP, CAPABILITY_KV})


@dataclass(frozen=True, slots=True)
class Limits:
    """What one guest call may consume; every call starts with the full budget."""

    fuel: int = 500_000_000
    max_memory_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 1.0
    max_input_bytes: int = 1024 * 1024
    max_output_bytes: int = 1024 * 1024
    max_log_lines: int = 100
    max_log_line_bytes: int = 4096
    http_timeout_s: float = 5.0
    http_max_response_bytes: int = 1024 * 1024
    kv_max_key_bytes: int = 256
    kv_max_value_bytes: int = 64 * 1024
    max_idle_instances_per_module: int = 8
    max_idle_instances: int = 256

    def __post_init__(self) -> None:
        positive = {
            "fuel": self.fuel,
            "max_memory_bytes": self.max_memory_bytes,
            "timeout_s": self.timeout_s,
            "max_input_bytes": self.max_input_bytes,
            "max_output_bytes": self.max_output_bytes,
            "http_timeout_s": self.http_timeout_s,
            "http_max_response_bytes": self.http_max_response_bytes,
            "kv_max_key_bytes": self.kv_max_key_bytes,
            "kv_max_value_bytes": self.kv_max_value_bytes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")
        if self.max_memory_bytes < WASM_PAGE:
            raise ValueError(f"Limits.max_memory_bytes must be at least one page ({WASM_PAGE})")
        for name in ("max_log_lines", "max_idle_instances_per_module", "max_idle_instances"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must not be negative")
