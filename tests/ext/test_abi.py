"""ABI helpers, and the portable (checked) call path behaving like the fast one."""

from __future__ import annotations

import pytest

from hanzocloud.ext import ExtensionFailed, ExtensionRuntime, abi

from .support import EXAMPLES, GuestBuilder, RuntimeFactory


@pytest.mark.parametrize(("ptr", "length"),
                         [(0, 0), (1024, 17), (0x7FFFFFFF, 1), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_pack_round_trip(ptr: int, length: int) -> None:
    packed = abi.pack(ptr, length)
    assert -(1 << 63) <= packed < (1 << 63)  # fits a wasm i64
    assert abi.unpack(packed) == (ptr, length)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "portable"])
async def test_both_call_paths_agree(monkeypatch: pytest.MonkeyPatch, guest: GuestBuilder,
                                     make_runtime: RuntimeFactory, fast: bool) -> None:
    if fast and not abi.FAST_PATH:
        pytest.skip("this wasmtime build has no unchecked call path")
    monkeypatch.setattr(abi, "FAST_PATH", fast)
    runtime: ExtensionRuntime = make_runtime()
    echo = runtime.load(EXAMPLES / "echo-wat")
    envelope = {"method": "PUT", "body": {"ü": list(range(50))}}
    out = await runtime.call(echo, "handle", envelope, org="acme")
    assert out["body"] == envelope
    trap = runtime.load(guest("trap", exports=["boom", "ok"]))
    with pytest.raises(ExtensionFailed, match="unreachable"):
        await runtime.call(trap, "boom", {}, org="acme")
    assert (await runtime.call(trap, "ok", {}, org="acme"))["body"] == "ok"
    bad = runtime.load(guest("badjson", exports=["wild", "ok"]))
    with pytest.raises(ExtensionFailed, match="invalid output pointer"):
        await runtime.call(bad, "wild", {}, org="acme")
