"""Instances are per org, reused only after clean calls, and safe under concurrency."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from hanzocloud.errors import InvalidArgument
from hanzocloud.ext import (
    ExtensionFailed,
    ExtensionNotFound,
    ExtensionRuntime,
    Limits,
    LoadedModule,
)

from .support import EXAMPLES, GuestBuilder, RuntimeFactory, build_app


async def count(runtime: ExtensionRuntime, module: LoadedModule, org: str) -> int:
    out = await runtime.call(module, "bump", {}, org=org)
    return int(out["body"]["count"])


async def test_state_never_crosses_orgs(guest: GuestBuilder, runtime: ExtensionRuntime) -> None:
    counter = runtime.load(guest("counter", exports=["bump", "crash"]))
    assert [await count(runtime, counter, "org-a") for _ in range(3)] == [1, 2, 3]
    assert await count(runtime, counter, "org-b") == 1  # a fresh instance, not org-a's
    assert await count(runtime, counter, "org-a") == 4  # org-a's own instance, reused
    assert await count(runtime, counter, "org-b") == 2
    assert runtime.idle_instances("org-a") == 1 and runtime.idle_instances("org-b") == 1


async def test_failed_call_discards_the_instance(guest: GuestBuilder,
                                                 runtime: ExtensionRuntime) -> None:
    counter = runtime.load(guest("counter", exports=["bump", "crash"]))
    assert [await count(runtime, counter, "org-a") for _ in range(2)] == [1, 2]
    with pytest.raises(ExtensionFailed, match="counter@1.0.0 export 'crash'"):
        await runtime.call(counter, "crash", {}, org="org-a")
    # The crashed instance had bumped to 3 before trapping; its replacement starts over.
    assert await count(runtime, counter, "org-a") == 1


async def test_same_org_through_http_keeps_its_instance(guest: GuestBuilder,
                                                        runtime: ExtensionRuntime) -> None:
    counter = runtime.load(guest("counter", exports=["bump", "crash"]))
    app = build_app(runtime, [("/count", counter, "bump", ["GET"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cloud") as client:
        seen: dict[str, list[int]] = {}
        for org in ["alpha", "beta", "alpha", "gamma", "alpha", "beta"]:
            response = await client.get("/count", headers={"x-test-org": org})
            seen.setdefault(org, []).append(response.json()["count"])
    assert seen == {"alpha": [1, 2, 3], "beta": [1, 2], "gamma": [1]}


async def test_hundred_concurrent_calls_on_one_module(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(workers=8)
    echo = runtime.load(EXAMPLES / "echo-wat")
    app = build_app(runtime, [("/echo/{n}", echo, "handle", ["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cloud") as client:
        responses = await asyncio.gather(*[
            client.post(f"/echo/{n}?n={n}", json={"n": n, "pad": "x" * n},
                        headers={"x-test-org": f"org-{n % 3}", "x-test-user": f"u{n}"})
            for n in range(100)])
    for n, response in enumerate(responses):
        assert response.status_code == 200
        body = response.json()
        assert body["params"] == {"n": str(n)} and body["query"] == {"n": str(n)}
        assert body["body"] == {"n": n, "pad": "x" * n}
        assert (body["org"], body["user"]) == (f"org-{n % 3}", f"u{n}")
    assert 1 <= runtime.idle_instances() <= 3 * 8


async def test_hundred_concurrent_calls_mixed_with_failures(guest: GuestBuilder,
                                                            make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(workers=8)
    counter = runtime.load(guest("counter", exports=["bump", "crash"]))
    calls = [runtime.call(counter, "crash" if n % 10 == 0 else "bump", {}, org="acme")
             for n in range(100)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 10 and all(isinstance(f, ExtensionFailed) for f in failures)
    assert all(isinstance(r, dict) and r["body"]["count"] >= 1 for r in results
               if not isinstance(r, BaseException))


def test_idle_pool_is_bounded(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(limits=Limits(max_idle_instances=3))
    echo = runtime.load(EXAMPLES / "echo-wat")
    for n in range(6):
        runtime.call_sync(echo, "handle", {}, org=f"org-{n}")
    assert runtime.idle_instances() == 3
    assert runtime.idle_instances("org-0") == 0  # least recently used went first
    assert runtime.idle_instances("org-5") == 1


@pytest.mark.parametrize("org", ["", "Acme", "../x", "a" * 64, "-lead", "acme\n"],
                         ids=["empty", "upper", "traversal", "long", "dash", "newline"])
async def test_call_rejects_bad_org(runtime: ExtensionRuntime, org: str) -> None:
    echo = runtime.load(EXAMPLES / "echo-wat")
    with pytest.raises(InvalidArgument, match="invalid org slug"):
        await runtime.call(echo, "handle", {}, org=org)


async def test_unknown_export_and_unencodable_envelope(runtime: ExtensionRuntime) -> None:
    echo = runtime.load(EXAMPLES / "echo-wat")
    with pytest.raises(ExtensionNotFound, match="has no export 'nope'"):
        await runtime.call(echo, "nope", {}, org="acme")
    with pytest.raises(InvalidArgument, match="is not JSON"):
        await runtime.call(echo, "handle", {"when": object()}, org="acme")
