"""Hooks: a guest decides whether an operation goes ahead (record hooks, gateway policies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hanzocloud.ext.errors import ExtensionFailed
from hanzocloud.ext.instance import LoadedModule
from hanzocloud.ext.runtime import ExtensionRuntime

HookAction = Literal["allow", "deny", "modify"]
_ACTIONS = ("allow", "deny", "modify")


@dataclass(frozen=True, slots=True)
class HookResult:
    """A guest's verdict: allow, deny (with a message) or modify (with the new record)."""

    action: HookAction
    record: dict[str, Any] | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        """True unless the guest denied the operation."""
        return self.action != "deny"


def parse_hook_result(module: LoadedModule, export: str, output: dict[str, Any]) -> HookResult:
    """Validate a guest's hook output; ExtensionFailed naming the problem if malformed."""
    ref = module.ref

    def bad(reason: str) -> ExtensionFailed:
        return ExtensionFailed(f"extension {ref} hook {export!r}: invalid result: {reason}",
                               module=ref, export=export, cause="invalid_output")

    unknown = sorted(set(output) - {"action", "record", "message", "headers"})
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}")
    action = output.get("action")
    if action not in _ACTIONS:
        raise bad(f"action must be one of {', '.join(_ACTIONS)}, got {action!r}")
    record = output.get("record")
    if action == "modify" and not isinstance(record, dict):
        raise bad("action 'modify' needs a 'record' object")
    if record is not None and not isinstance(record, dict):
        raise bad("record must be an object")
    message = output.get("message", "")
    if not isinstance(message, str):
        raise bad("message must be a string")
    headers = output.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise bad("headers must be an object of strings")
    return HookResult(action=action, record=record if action == "modify" else None,
                      message=message, headers=dict(headers))


async def run_hook(runtime: ExtensionRuntime, module: LoadedModule, export: str,
                   payload: dict[str, Any], *, org: str) -> HookResult:
    """Call a hook export with `payload` (plus the caller's `org`) and return its verdict."""
    # The tenant comes from the caller, never from the payload.
    envelope = {**payload, "org": org}
    output = await runtime.call(module, export, envelope, org=org)
    return parse_hook_result(module, export, output)
