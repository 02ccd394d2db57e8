"""Manifest validation and load-time checks: every bad extension fails with a clear sentence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from hanzocloud.errors import ConfigError
from hanzocloud.ext import ExtensionRuntime, InvalidExtension, parse_manifest
from hanzocloud.ext.manifest import load_manifest

from .support import EXAMPLES, GuestBuilder, RuntimeFactory, write_extension

GOOD: dict[str, Any] = {"name": "echo", "version": "1.0.0", "runtime": "wasm",
                        "module": "echo.wasm", "exports": ["handle"]}


def test_good_manifest_parses() -> None:
    manifest = parse_manifest({**GOOD, "capabilities": ["kv"]})
    assert manifest.ref == "echo@1.0.0"
    assert manifest.exports == ("handle",)
    assert manifest.capabilities == ("kv",)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"name": "Echo"}, "name: must match"),
        ({"name": "-echo"}, "name: must match"),
        ({"name": "../etc"}, "name: must match"),
        ({"name": "echo\n"}, "name: must match"),
        ({"version": "1.0"}, "version: must be a semantic version"),
        ({"version": 1}, "version: Input should be a valid string"),
        ({"runtime": 3}, "runtime: Input should be a valid string"),
        ({"module": "../x.wasm"}, "module: must be a plain file name"),
        ({"module": "sub/x.wasm"}, "module: must be a plain file name"),
        ({"module": "x.wat"}, "module: must be a plain file name"),
        ({"exports": []}, "exports: must list at least one export"),
        ({"exports": "handle"}, "exports: must be a list of strings"),
        ({"exports": ["handle", "handle"]}, "exports: must not repeat"),
        ({"exports": ["alloc"]}, "'alloc' is part of the ABI"),
        ({"exports": ["9lives"]}, "'9lives' is not a valid export name"),
        ({"capabilities": ["net"]}, "unknown capability 'net' (known: http, kv)"),
        ({"capabilities": ["kv", "kv"]}, "must not repeat a capability"),
        ({"extra": True}, "extra: unknown field"),
        ({"name": None}, "name: Input should be a valid string"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_bad_manifest_fields(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidExtension) as info:
        parse_manifest({**GOOD, **change})
    assert fragment in info.value.message
    assert info.value.code == "invalid_extension" and info.value.status == 400


@pytest.mark.parametrize("field", ["name", "version", "runtime", "module", "exports"])
def test_missing_required_field(field: str) -> None:
    data = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(InvalidExtension, match=rf"{field}: Field required"):
        parse_manifest(data)


def test_manifest_lists_every_problem_at_once() -> None:
    with pytest.raises(InvalidExtension) as info:
        parse_manifest({**GOOD, "name": "BAD", "version": "x"})
    assert len(info.value.details["problems"]) == 2


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "not found"), (b"{not json", "not valid JSON"), (b"[1]", "must be a JSON object")],
    ids=["missing", "garbage", "array"],
)
def test_manifest_file_problems(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    if content is not None:
        (tmp_path / "extension.json").write_bytes(content)
    with pytest.raises(InvalidExtension, match=fragment):
        load_manifest(tmp_path)


ABI_PRELUDE = """
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 64))
  (func (export "dealloc") (param i32 i32))
"""
ENTRY = '(func (export "handle") (param i32 i32) (result i64) (i64.const 0))'


@pytest.mark.parametrize(
    ("wat", "capabilities", "fragment"),
    [
        (f'(module (func (export "alloc") (param i32) (result i32) (i32.const 0)) {ENTRY})', (),
         "must export a memory named 'memory'"),
        (f'(module (memory (export "memory") 1) {ENTRY})', (),
         "must export a function 'alloc' (i32) -> (i32)"),
        (f"(module {ABI_PRELUDE})", (), "must export a function 'handle'"),
        (f'(module {ABI_PRELUDE} (func (export "handle") (param i32) (result i32) i32.const 0))',
         (), "export 'handle' has type (i32) -> (i32), the ABI needs (i32, i32) -> (i64)"),
        (f'(module (import "env" "abort" (func)) {ABI_PRELUDE} {ENTRY})', (),
         "imports env.abort, which the host does not provide"),
        (f'(module (import "hanzo" "log" (func (param i32))) {ABI_PRELUDE} {ENTRY})', (),
         "import hanzo.log must have type (i32, i32) -> ()"),
        (f'(module (import "hanzo" "kv_get" (func (param i32 i32) (result i64))) '
         f"{ABI_PRELUDE} {ENTRY})", (),
         "imports hanzo.kv_get but extension.json does not request the 'kv' capability"),
    ],
    ids=["no-memory", "no-alloc", "no-entry", "entry-type", "unknown-import", "import-type",
         "import-without-capability"],
)
def test_abi_violations_fail_to_load(guest: GuestBuilder, runtime: ExtensionRuntime, wat: str,
                                     capabilities: tuple[str, ...], fragment: str) -> None:
    directory = guest(wat, exports=["handle"], capabilities=capabilities)
    with pytest.raises(InvalidExtension) as info:
        runtime.load(directory)
    assert fragment in info.value.message
    assert "inline@1.0.0" in info.value.message


def test_valid_minimal_module_loads(guest: GuestBuilder, runtime: ExtensionRuntime) -> None:
    module = runtime.load(guest(f"(module {ABI_PRELUDE} {ENTRY})", exports=["handle"]))
    assert module.ref == "inline@1.0.0" and module.exports == ("handle",)
    assert len(module.sha256) == 64


def test_compiled_modules_are_cached_by_digest(guest: GuestBuilder,
                                               runtime: ExtensionRuntime) -> None:
    first = runtime.load(guest("trap", exports=["boom"]))
    second = runtime.load(first.directory)
    assert first.sha256 == second.sha256
    assert first.compiled is second.compiled


@pytest.mark.parametrize(
    ("wasm", "fragment"),
    [(b"(module)", "is not a WebAssembly binary"),
     (b"\x00asm\x01\x00\x00\x00\xff\xff", "module does not compile")],
    ids=["text", "corrupt"],
)
def test_unusable_module_file(tmp_path: Path, runtime: ExtensionRuntime, wasm: bytes,
                              fragment: str) -> None:
    directory = write_extension(tmp_path / "x", name="broken", wasm=wasm, exports=["handle"])
    with pytest.raises(InvalidExtension, match=fragment):
        runtime.load(directory)


def test_missing_module_file(tmp_path: Path, runtime: ExtensionRuntime) -> None:
    directory = write_extension(tmp_path / "x", name="gone", wasm=b"", exports=["handle"])
    (directory / "gone.wasm").unlink()
    with pytest.raises(InvalidExtension, match=r"gone@1.0.0: cannot read .*gone.wasm"):
        runtime.load(directory)


@pytest.mark.parametrize(
    ("manifest_runtime", "allowed", "fragment"),
    [("python", ("wasm",), "runtime 'python' is not allowed here (allowed: wasm)"),
     ("wasm", (), "runtime 'wasm' is not allowed here (allowed: none)")],
    ids=["unknown-runtime", "wasm-switched-off"],
)
def test_runtime_not_allowed(tmp_path: Path, make_runtime: RuntimeFactory,
                             manifest_runtime: str, allowed: tuple[str, ...],
                             fragment: str) -> None:
    wasm = wasmtime.wat2wasm(f"(module {ABI_PRELUDE} {ENTRY})")
    directory = write_extension(tmp_path / "x", name="rt", wasm=wasm, exports=["handle"],
                                runtime=manifest_runtime)
    with pytest.raises(InvalidExtension) as info:
        make_runtime(allowed_runtimes=allowed).load(directory)
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"allowed_runtimes": ("wasm", "docker")}, "runtime 'docker' is not supported"),
     ({"allowed_capabilities": {"net"}}, "unknown extension capability 'net'"),
     ({"tick_s": 0}, "tick must be positive")],
    ids=["runtime", "capability", "tick"],
)
def test_operator_configuration_is_checked(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ExtensionRuntime(**kwargs)


def test_compiled_cache_is_bounded(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_compiled_modules=1)
    first = runtime.load(EXAMPLES / "echo-wat")
    assert runtime.load(EXAMPLES / "echo-wat").compiled is first.compiled
    runtime.load(EXAMPLES / "hello-as")  # evicts echo-wat's compiled module
    again = runtime.load(EXAMPLES / "echo-wat")
    assert again.compiled is not first.compiled and again.sha256 == first.sha256
    # modules loaded before eviction keep working
    assert runtime.call_sync(first, "handle", {"a": 1}, org="acme")["body"] == {"a": 1}
