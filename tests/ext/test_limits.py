"""Misbehaving guests are contained: a clear error naming the module, then business as usual."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from hanzocloud.ext import ExtensionFailed, ExtensionTimeout, Limits

from .support import EXAMPLES, GuestBuilder, RuntimeFactory, build_app

IDENTITY = {"x-test-org": "acme", "x-test-user": "u-1"}

CASES: list[tuple[str, str, dict[str, Any], int, str, str, str]] = [
    # guest, export, limits, HTTP status, error code, cause, message fragment
    ("loop", "spin", {"timeout_s": 0.2, "fuel": 10**15}, 504, "extension_timeout", "timeout",
     "timed out after 0.2s"),
    ("loop", "spin", {"fuel": 2_000_000, "timeout_s": 10}, 502, "extension_failed",
     "out_of_fuel", "ran out of fuel (limit 2000000)"),
    ("bomb", "explode", {"max_memory_bytes": 4 * 1024 * 1024}, 502, "extension_failed",
     "out_of_memory", "out of memory (limit 4194304 bytes)"),
    ("trap", "boom", {}, 502, "extension_failed", "trap",
     "wasm `unreachable` instruction executed"),
    ("badjson", "garbage", {}, 502, "extension_failed", "invalid_output",
     "output is not valid UTF-8 JSON"),
    ("badjson", "array", {}, 502, "extension_failed", "invalid_output",
     "output must be a JSON object, got list"),
    ("badjson", "wild", {}, 502, "extension_failed", "invalid_output",
     "returned an invalid output pointer"),
    ("huge", "flood", {"max_output_bytes": 1024 * 1024}, 502, "extension_failed",
     "output_too_large", "output of 2097152 bytes exceeds the limit of 1048576 bytes"),
]


@pytest.mark.parametrize(("name", "export", "limits", "status", "code", "cause", "fragment"),
                         CASES, ids=[f"{c[0]}-{c[1]}-{c[5]}" for c in CASES])
async def test_misbehaving_guest_is_contained(
    guest: GuestBuilder, make_runtime: RuntimeFactory, name: str, export: str,
    limits: dict[str, Any], status: int, code: str, cause: str, fragment: str,
) -> None:
    runtime = make_runtime(limits=Limits(**limits))
    module = runtime.load(guest(name, exports=[export, "ok"]))
    app = build_app(runtime, [("/bad", module, export, ["POST"]), ("/ok", module, "ok", ["GET"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
        started = time.monotonic()
        bad = await client.post("/bad", json={"x": 1}, headers=IDENTITY)
        elapsed = time.monotonic() - started
        assert bad.status_code == status
        error = bad.json()["error"]
        assert error["code"] == code
        assert error["message"].startswith(f"extension {name}@1.0.0 export '{export}': ")
        assert fragment in error["message"]
        assert error["details"] == {"module": f"{name}@1.0.0", "export": export, "cause": cause}
        assert "Traceback" not in bad.text and "backtrace" not in bad.text
        assert runtime.idle_instances("acme") == 0  # the failed instance was discarded
        for _ in range(2):  # the next calls on the same module and org succeed
            ok = await client.get("/ok", headers=IDENTITY)
            assert ok.status_code == 200 and ok.text == "ok"
        assert runtime.idle_instances("acme") == 1
        again = await client.post("/bad", json={"x": 1}, headers=IDENTITY)
        assert again.json()["error"]["details"]["cause"] == cause
    assert elapsed < 5


async def test_stack_overflow_is_contained(guest: GuestBuilder,
                                           make_runtime: RuntimeFactory) -> None:
    wat = """(module (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 64))
      (func (export "dealloc") (param i32 i32))
      (func $deep (export "deep") (param i32 i32) (result i64)
        (call $deep (i32.add (local.get 0) (i32.const 1)) (local.get 1))))"""
    runtime = make_runtime(limits=Limits(fuel=10**12, timeout_s=10))
    module = runtime.load(guest(wat, exports=["deep"], name="recursive"))
    with pytest.raises(ExtensionFailed) as info:
        await runtime.call(module, "deep", {}, org="acme")
    assert info.value.cause == "stack_overflow"
    assert "recursive@1.0.0" in info.value.message


async def test_initial_memory_over_the_limit_fails_at_instantiation(
    guest: GuestBuilder, make_runtime: RuntimeFactory
) -> None:
    wat = """(module (memory (export "memory") 100)
      (func (export "alloc") (param i32) (result i32) (i32.const 64))
      (func (export "dealloc") (param i32 i32))
      (func (export "handle") (param i32 i32) (result i64) (i64.const 0)))"""
    runtime = make_runtime(limits=Limits(max_memory_bytes=1024 * 1024))
    module = runtime.load(guest(wat, exports=["handle"], name="greedy"))
    with pytest.raises(ExtensionFailed) as info:
        await runtime.call(module, "handle", {}, org="acme")
    assert info.value.cause == "instantiate"
    assert info.value.message.startswith("extension greedy@1.0.0 instantiation: ")


async def test_a_runaway_guest_does_not_delay_other_calls(
    guest: GuestBuilder, make_runtime: RuntimeFactory
) -> None:
    runtime = make_runtime(limits=Limits(timeout_s=0.6, fuel=10**15), workers=4)
    spinner = runtime.load(guest("loop", exports=["spin", "ok"]))
    echo = runtime.load(EXAMPLES / "echo-wat")
    started = time.monotonic()
    runaway = asyncio.ensure_future(runtime.call(spinner, "spin", {}, org="acme"))
    results = await asyncio.gather(*[
        runtime.call(echo, "handle", {"i": i}, org="other") for i in range(20)])
    quick = time.monotonic() - started
    assert [r["body"]["i"] for r in results] == list(range(20))
    assert quick < 0.5  # served while the runaway guest was still spinning
    assert not runaway.done()
    with pytest.raises(ExtensionTimeout):
        await runaway
    assert 0.55 < time.monotonic() - started < 3


async def test_calls_after_close_are_refused(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    module = runtime.load(EXAMPLES / "echo-wat")
    assert (await runtime.call(module, "handle", {}, org="acme"))["status"] == 200
    runtime.close()
    runtime.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await runtime.call(module, "handle", {}, org="acme")
