"""run_hook: a guest allows, denies or modifies; malformed verdicts are clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from hanzocloud.ext import ExtensionFailed, ExtensionRuntime, HookResult, run_hook
from hanzocloud.ext.hooks import parse_hook_result

from .support import GuestBuilder

PAYLOAD = {"event": "record.create", "collection": "orders", "record": {"amount": 5},
           "org": "spoofed"}


@pytest.fixture
def hook(guest: GuestBuilder, runtime: ExtensionRuntime) -> Any:
    return runtime.load(guest("hook", exports=["allow", "deny", "modify", "confused"]))


async def test_allow(runtime: ExtensionRuntime, hook: Any) -> None:
    result = await run_hook(runtime, hook, "allow", PAYLOAD, org="acme")
    assert result == HookResult(action="allow")
    assert result.allowed


async def test_deny_carries_message_and_headers(runtime: ExtensionRuntime, hook: Any) -> None:
    result = await run_hook(runtime, hook, "deny", PAYLOAD, org="acme")
    assert not result.allowed
    assert result.message == "amount over limit"
    assert result.headers == {"x-policy": "limits"}


async def test_modify_returns_the_record_and_org_comes_from_the_caller(
    runtime: ExtensionRuntime, hook: Any
) -> None:
    result = await run_hook(runtime, hook, "modify", PAYLOAD, org="acme")
    assert result.action == "modify" and result.allowed
    # The guest echoed its input as the record: the payload, with the caller's org.
    assert result.record == {**PAYLOAD, "org": "acme"}


async def test_unknown_action_is_an_extension_failure(runtime: ExtensionRuntime,
                                                      hook: Any) -> None:
    with pytest.raises(ExtensionFailed) as info:
        await run_hook(runtime, hook, "confused", PAYLOAD, org="acme")
    assert "hook@1.0.0 hook 'confused': invalid result: action must be one of" in (
        info.value.message)


@pytest.mark.parametrize(
    ("output", "fragment"),
    [({"action": "modify"}, "action 'modify' needs a 'record' object"),
     ({"action": "allow", "record": [1]}, "record must be an object"),
     ({"action": "deny", "message": 3}, "message must be a string"),
     ({"action": "deny", "headers": {"a": 1}}, "headers must be an object of strings"),
     ({"action": "allow", "why": "x"}, "unknown field 'why'"),
     ({}, "action must be one of allow, deny, modify, got None")],
    ids=["modify-no-record", "record-list", "message-int", "headers-int", "unknown", "empty"],
)
def test_parse_hook_result_rejects(hook: Any, output: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ExtensionFailed) as info:
        parse_hook_result(hook, "h", output)
    assert fragment in info.value.message
    assert info.value.details["cause"] == "invalid_output"


def test_parse_hook_result_drops_record_unless_modifying(hook: Any) -> None:
    result = parse_hook_result(hook, "h", {"action": "allow", "record": {"a": 1}})
    assert result.record is None
