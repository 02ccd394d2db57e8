"""Versioned secrets: round trips, check-and-set, soft delete, undelete, destroy,
max_versions, cas_required, listing and purge."""

from __future__ import annotations

import pytest

from .support import Kms, assert_error


async def write(kms: Kms, path: str, value: str, **extra: object) -> int:
    body = await kms.ok("PUT", f"/secrets/{path}", json={"value": value, **extra})
    return int(body["version"])


async def test_round_trip_and_versions(kms: Kms) -> None:
    assert await write(kms, "app/db/password", "one") == 1
    assert await write(kms, "app/db/password", "two") == 2
    latest = await kms.ok("GET", "/secrets/app/db/password")
    assert (latest["path"], latest["version"], latest["value"]) == ("app/db/password", 2, "two")
    assert latest["current_version"] == 2 and latest["created_time"].endswith("Z")
    first = await kms.ok("GET", "/secrets/app/db/password", params={"version": "1"})
    assert (first["version"], first["value"]) == (1, "one")


async def test_unicode_and_empty_values_round_trip(kms: Kms) -> None:
    for value in ["", "päss wörd ✓ 🔑", "line1\nline2\x00tail"]:
        version = await write(kms, "app/odd", value)
        got = await kms.ok("GET", "/secrets/app/odd", params={"version": str(version)})
        assert got["value"] == value


CAS_CASES = [
    # (existing values, cas, expected status, expected current version afterwards)
    ([], 0, 200, 1),
    (["a"], 0, 409, 1),
    (["a"], 1, 200, 2),
    (["a", "b"], 1, 409, 2),
    (["a", "b"], 3, 409, 2),
    ([], 2, 409, 0),
]


@pytest.mark.parametrize(("existing", "cas", "status", "after"), CAS_CASES,
                         ids=["0-absent", "0-present", "match", "stale", "ahead", "absent-N"])
async def test_check_and_set(kms: Kms, existing: list[str], cas: int, status: int,
                             after: int) -> None:
    for value in existing:
        await write(kms, "svc/token", value)
    r = await kms.call("PUT", "/secrets/svc/token", json={"value": "new", "cas": cas})
    if status == 409:
        error = assert_error(r, 409, "conflict")
        assert error["details"]["current_version"] == len(existing)
    else:
        assert r.status_code == 200 and r.json()["version"] == after
    if after == 0:  # nothing existed and nothing was created
        assert_error(await kms.call("GET", "/metadata/svc/token"), 404, "not_found")
        assert (await kms.ok("GET", "/secrets"))["items"] == []
        return
    meta = await kms.ok("GET", "/metadata/svc/token")
    assert meta["current_version"] == after
    # Nothing lost: every earlier value is still readable, unchanged.
    for version, value in enumerate(existing, start=1):
        got = await kms.ok("GET", "/secrets/svc/token", params={"version": str(version)})
        assert got["value"] == value


async def test_soft_delete_undelete_destroy(kms: Kms) -> None:
    for value in ["v1", "v2", "v3"]:
        await write(kms, "app/key", value)
    assert await kms.ok("DELETE", "/secrets/app/key") is None
    error = assert_error(await kms.call("GET", "/secrets/app/key"), 404, "not_found")
    assert error["details"]["version"] == 3 and error["details"]["deleted_time"]
    assert (await kms.ok("GET", "/secrets/app/key", params={"version": "2"}))["value"] == "v2"

    await kms.ok("POST", "/undelete/app/key", json={"versions": [3]})
    assert (await kms.ok("GET", "/secrets/app/key"))["value"] == "v3"

    await kms.ok("POST", "/delete/app/key", json={"versions": [1, 2]})
    await kms.ok("POST", "/destroy/app/key", json={"versions": [2, 3]})
    await kms.ok("POST", "/undelete/app/key", json={"versions": [1, 2, 3]})
    meta = await kms.ok("GET", "/metadata/app/key")
    states = {v["version"]: (v["deleted_time"] is not None, v["destroyed"])
              for v in meta["versions"]}
    assert states == {1: (False, False), 2: (True, True), 3: (False, True)}
    assert (await kms.ok("GET", "/secrets/app/key", params={"version": "1"}))["value"] == "v1"
    for version in ("2", "3"):
        r = await kms.call("GET", "/secrets/app/key", params={"version": version})
        assert assert_error(r, 404)["details"]["destroyed"] is True
    # A new write after destroy continues the numbering.
    assert await write(kms, "app/key", "v4") == 4


async def test_max_versions_prunes_oldest(kms: Kms) -> None:
    await kms.ok("PUT", "/metadata/app/rotating", json={"max_versions": 3})
    for i in range(1, 6):
        await write(kms, "app/rotating", f"value-{i}")
    meta = await kms.ok("GET", "/metadata/app/rotating")
    assert [v["version"] for v in meta["versions"]] == [3, 4, 5]
    assert (meta["oldest_version"], meta["current_version"], meta["max_versions"]) == (3, 5, 3)
    r = await kms.call("GET", "/secrets/app/rotating", params={"version": "1"})
    assert_error(r, 404, "not_found")
    meta = await kms.ok("PUT", "/metadata/app/rotating", json={"max_versions": 1})
    assert [v["version"] for v in meta["versions"]] == [5]


async def test_cas_required(kms: Kms) -> None:
    await write(kms, "app/strict", "a")
    meta = await kms.ok("PUT", "/metadata/app/strict", json={"cas_required": True})
    assert meta["cas_required"] is True
    r = await kms.call("PUT", "/secrets/app/strict", json={"value": "b"})
    assert assert_error(r, 400, "invalid_argument")["details"]["field"] == "cas"
    assert await write(kms, "app/strict", "b", cas=1) == 2


async def test_list_by_prefix_and_pages(kms: Kms) -> None:
    for path in ["app/a", "app/b", "app/c/d", "apple/x", "other"]:
        await write(kms, path, "v")
    listed = await kms.ok("GET", "/secrets", params={"prefix": "app/"})
    assert [i["path"] for i in listed["items"]] == ["app/a", "app/b", "app/c/d"]
    assert listed["totalItems"] == 3
    page2 = await kms.ok("GET", "/secrets", params={"page": "2", "perPage": "2"})
    assert [i["path"] for i in page2["items"]] == ["app/c/d", "apple/x"]
    assert page2["totalItems"] == 5
    assert "value" not in str(listed["items"])


async def test_purge_removes_path_and_history(kms: Kms) -> None:
    await write(kms, "tmp/x", "a")
    await write(kms, "tmp/x", "b")
    await kms.ok("DELETE", "/metadata/tmp/x")
    assert_error(await kms.call("GET", "/metadata/tmp/x"), 404, "not_found")
    assert_error(await kms.call("GET", "/secrets/tmp/x"), 404, "not_found")
    assert (await kms.ok("GET", "/secrets", params={"prefix": "tmp/"}))["items"] == []
    assert await write(kms, "tmp/x", "fresh") == 1


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/secrets/nope", None),
    ("DELETE", "/secrets/nope", None),
    ("GET", "/metadata/nope", None),
    ("DELETE", "/metadata/nope", None),
    ("POST", "/delete/nope", {"versions": [1]}),
    ("POST", "/undelete/nope", {"versions": [1]}),
    ("POST", "/destroy/nope", {"versions": [1]}),
], ids=["read", "delete", "metadata", "purge", "delete-versions", "undelete", "destroy"])
async def test_missing_path_is_404(kms: Kms, method: str, path: str,
                                   body: dict[str, object] | None) -> None:
    r = await kms.call(method, path, json=body)
    assert assert_error(r, 404, "not_found")["details"]["path"] == "nope"


async def test_missing_version_is_404(kms: Kms) -> None:
    await write(kms, "app/one", "v")
    r = await kms.call("GET", "/secrets/app/one", params={"version": "7"})
    assert assert_error(r, 404, "not_found")["details"]["version"] == 7
