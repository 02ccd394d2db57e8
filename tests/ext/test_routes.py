"""Example guests (WAT and AssemblyScript) served as real routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import wasmtime

from hanzocloud.ext import ExtensionFailed, ExtensionRuntime, LoadedModule, build_response

from .support import EXAMPLES, LiveServer, RuntimeFactory, build_app

GUESTS = ["echo-wat", "hello-as"]
ENVELOPE_FIELDS = {"method", "path", "params", "query", "headers", "body", "org", "user",
                   "userEmail"}
IDENTITY = {"x-test-org": "acme", "x-test-user": "u-1", "x-test-email": "ada@acme.test"}


@pytest.fixture
def examples(runtime: ExtensionRuntime) -> dict[str, LoadedModule]:
    return {name: runtime.load(EXAMPLES / name) for name in GUESTS}


def envelope_of(guest: str, body: dict[str, Any]) -> dict[str, Any]:
    """Where each example puts the envelope it received."""
    return body if guest == "echo-wat" else body["envelope"]


def client_for(runtime: ExtensionRuntime, module: LoadedModule) -> httpx.AsyncClient:
    app = build_app(runtime, [("/v1/x/items/{item}", module, "handle",
                               ["GET", "POST", "PUT", "DELETE"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud")


@pytest.mark.parametrize("name", GUESTS)
async def test_every_envelope_field_reaches_the_guest(
    runtime: ExtensionRuntime, examples: dict[str, LoadedModule], name: str
) -> None:
    async with client_for(runtime, examples[name]) as client:
        response = await client.post(
            "/v1/x/items/42?color=red&size=L",
            json={"a": [1, "two"], "ünï": "cödé"},
            headers={**IDENTITY, "authorization": "Bearer secret", "cookie": "sid=s3cr3t",
                     "x-custom": "v"},
        )
    assert response.status_code == 200, response.text
    envelope = envelope_of(name, response.json())
    assert set(envelope) == ENVELOPE_FIELDS
    assert envelope["method"] == "POST"
    assert envelope["path"] == "/v1/x/items/42"
    assert envelope["params"] == {"item": "42"}
    assert envelope["query"] == {"color": "red", "size": "L"}
    assert envelope["body"] == {"a": [1, "two"], "ünï": "cödé"}
    assert (envelope["org"], envelope["user"], envelope["userEmail"]) == (
        "acme", "u-1", "ada@acme.test")
    assert envelope["headers"]["x-custom"] == "v"
    assert "authorization" not in envelope["headers"]
    assert "cookie" not in envelope["headers"]
    if name == "hello-as":
        assert response.json()["greeting"] == "hello, u-1"
        assert response.headers["x-guest"] == "assemblyscript"


@pytest.mark.parametrize("name", GUESTS)
@pytest.mark.parametrize(
    ("status", "echo"),
    [("201", "created"), ("418", "teapot \"quoted\""), ("503", "down ✓"), ("999", "ignored")],
    ids=["201", "418", "503", "out-of-range"],
)
async def test_status_and_headers_are_honoured(
    runtime: ExtensionRuntime, examples: dict[str, LoadedModule], name: str, status: str,
    echo: str,
) -> None:
    async with client_for(runtime, examples[name]) as client:
        response = await client.get(
            "/v1/x/items/1",
            headers=[*((k.encode(), v.encode()) for k, v in IDENTITY.items()),
                     (b"x-echo-status", status.encode()), (b"x-echo-header", echo.encode())],
        )
    expected = int(status) if status != "999" else 200
    assert response.status_code == expected
    assert dict(response.headers.raw)[b"x-echo-header"] == echo.encode()
    assert response.headers["content-type"] == "application/json"
    assert envelope_of(name, response.json())["method"] == "GET"


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [(b"plain words", "text/plain", "plain words"),
     (b"", "text/plain", None),
     (b'{"k": [true, null]}', "application/vnd.api+json", {"k": [True, None]}),
     (b"\xff\xfe", "application/octet-stream", "\ufffd\ufffd")],
    ids=["text", "empty", "json-suffix", "binary-replaced"],
)
async def test_request_body_forms(runtime: ExtensionRuntime, examples: dict[str, LoadedModule],
                                  content: bytes, content_type: str, expected: Any) -> None:
    async with client_for(runtime, examples["echo-wat"]) as client:
        response = await client.put("/v1/x/items/1", content=content,
                                    headers={**IDENTITY, "content-type": content_type})
    assert response.status_code == 200
    assert response.json()["body"] == expected


async def test_invalid_json_body_is_a_400(runtime: ExtensionRuntime,
                                          examples: dict[str, LoadedModule]) -> None:
    async with client_for(runtime, examples["echo-wat"]) as client:
        response = await client.post("/v1/x/items/1", content=b"{oops",
                                     headers={**IDENTITY, "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"


async def test_anonymous_caller_is_a_401(runtime: ExtensionRuntime,
                                         examples: dict[str, LoadedModule]) -> None:
    async with client_for(runtime, examples["echo-wat"]) as client:
        response = await client.get("/v1/x/items/1")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_oversized_request_body_is_a_413(make_runtime: RuntimeFactory) -> None:
    from hanzocloud.ext import Limits

    runtime = make_runtime(limits=Limits(max_input_bytes=4096))
    module = runtime.load(EXAMPLES / "echo-wat")
    async with client_for(runtime, module) as client:
        response = await client.post("/v1/x/items/1", content=b"x" * 5000, headers=IDENTITY)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_real_server_serves_both_guests(runtime: ExtensionRuntime,
                                        examples: dict[str, LoadedModule]) -> None:
    app = build_app(runtime, [(f"/v1/{name}/{{item}}", module, "handle", ["GET", "POST"])
                              for name, module in examples.items()])
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for name in GUESTS:
            response = client.post(f"/v1/{name}/7?q=1", json={"n": 1},
                                   headers={**IDENTITY, "x-echo-status": "202"})
            assert response.status_code == 202, response.text
            envelope = envelope_of(name, response.json())
            assert set(envelope) == ENVELOPE_FIELDS
            assert envelope["params"] == {"item": "7"}
            assert envelope["headers"]["host"] == f"127.0.0.1:{server.port}"
        failing = client.get("/v1/echo-wat/7")  # no identity
        assert failing.status_code == 401


def test_committed_wat_example_is_fresh_and_served(runtime: ExtensionRuntime) -> None:
    rebuilt = wasmtime.wat2wasm((EXAMPLES / "echo-wat" / "echo.wat").read_text())
    assert rebuilt == (EXAMPLES / "echo-wat" / "echo.wasm").read_bytes(), (
        "examples/ext/echo-wat/echo.wasm is stale: run scripts/build-ext-examples.sh wat")
    module = runtime.load(EXAMPLES / "echo-wat")
    out = runtime.call_sync(module, "handle", {"method": "GET", "headers": {}}, org="acme")
    assert out["status"] == 200 and out["body"] == {"method": "GET", "headers": {}}


def test_committed_assemblyscript_example_loads(runtime: ExtensionRuntime) -> None:
    module = runtime.load(EXAMPLES / "hello-as")
    imports = {(i.module, i.name) for i in module.compiled.imports}
    assert imports == {("hanzo", "log")}
    out = runtime.call_sync(module, "handle", {"user": "", "org": "acme"}, org="acme")
    assert out["body"]["greeting"] == "hello, anonymous"


RESPONSES_OK: list[tuple[dict[str, Any], int, bytes, str | None]] = [
    ({"status": 200, "body": "hi"}, 200, b"hi", "text/plain; charset=utf-8"),
    ({"status": 201, "body": {"a": 1}}, 201, b'{"a":1}', "application/json"),
    ({"body": [1, 2]}, 200, b"[1,2]", "application/json"),
    ({}, 200, b"", None),
    ({"status": 204, "body": "dropped"}, 204, b"", None),
    ({"headers": {"Content-Type": "text/html"}, "body": "<b>x</b>"}, 200, b"<b>x</b>",
     "text/html"),
    ({"headers": {"content-length": "999", "x-a": "b"}, "body": "hi"}, 200, b"hi",
     "text/plain; charset=utf-8"),
]


@pytest.mark.parametrize(("output", "status", "content", "content_type"), RESPONSES_OK,
                         ids=["text", "json", "default-status", "empty", "204", "override-ct",
                              "host-managed"])
def test_build_response(examples: dict[str, LoadedModule], output: dict[str, Any], status: int,
                        content: bytes, content_type: str | None) -> None:
    response = build_response(examples["echo-wat"], "handle", output)
    assert response.status_code == status
    assert response.body == content
    assert response.headers.get("content-type") == content_type
    assert response.headers.get("content-length", "0") == str(len(content))


@pytest.mark.parametrize(
    ("output", "fragment"),
    [({"status": "200"}, "status must be an integer from 200 to 599"),
     ({"status": 600}, "status must be an integer"),
     ({"status": 99}, "status must be an integer"),
     ({"status": 101}, "status must be an integer from 200 to 599, got 101"),
     ({"status": 199}, "status must be an integer from 200 to 599, got 199"),
     ({"status": True}, "status must be an integer"),
     ({"headers": ["x"]}, "headers must be an object"),
     ({"headers": {"x-n": 1}}, "header 'x-n' must have a token name and a string value"),
     ({"headers": {"bad name": "v"}}, "header 'bad name' must have a token name"),
     ({"headers": {"x-i": "a\r\nset-cookie: x=1"}}, "header 'x-i' contains a control character"),
     ({"headers": {"x-c": "a\u0001b"}}, "header 'x-c' contains a control character"),
     ({"headers": {"x-d": "a\x7fb"}}, "header 'x-d' contains a control character"),
     ({"headers": {"x-u": "snow \u2603"}}, "header 'x-u' contains a control character or "
                                           "a character outside Latin-1"),
     ({"headers": {"x-\u00e9": "v"}}, "must have a token name"),
     ({"status": 200, "extra": 1}, "unknown field 'extra'")],
    ids=["string-status", "600", "99", "101", "199", "bool", "list-headers", "int-header",
         "bad-name", "crlf", "control", "del", "non-latin-1", "non-token-name", "unknown-field"],
)
def test_build_response_rejects_malformed_output(examples: dict[str, LoadedModule],
                                                 output: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ExtensionFailed) as info:
        build_response(examples["echo-wat"], "handle", output)
    assert fragment in info.value.message
    assert "echo-wat@1.0.0" in info.value.message
    assert info.value.details["cause"] == "invalid_response"
