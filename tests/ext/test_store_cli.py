"""ModuleStore and `hanzocloud ext …`: install, list, get, remove, and slug checks."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hanzocloud.errors import Conflict, InvalidArgument
from hanzocloud.ext import (
    ExtensionNotFound,
    ExtensionRuntime,
    InvalidExtension,
    ModuleStore,
    cli_main,
)

from .support import EXAMPLES


def copy_example(tmp_path: Path, name: str, *, version: str | None = None) -> Path:
    target = tmp_path / "src" / f"{name}-{version or 'orig'}"
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("node_modules"))
    if version:
        manifest = json.loads((target / "extension.json").read_text())
        manifest["version"] = version
        (target / "extension.json").write_text(json.dumps(manifest))
    return target


def test_install_list_get_delete_round_trip(tmp_path: Path, runtime: ExtensionRuntime) -> None:
    store = ModuleStore(tmp_path / "data")
    installed = store.install("acme", EXAMPLES / "echo-wat")
    assert installed.directory == tmp_path / "data" / "orgs" / "acme" / "ext" / "echo-wat" / "1.0.0"
    assert sorted(p.name for p in installed.directory.iterdir()) == ["echo.wasm",
                                                                    "extension.json"]
    store.install("acme", copy_example(tmp_path, "echo-wat", version="1.10.0"))
    store.install("acme", copy_example(tmp_path, "echo-wat", version="1.2.0"))
    store.install("acme", copy_example(tmp_path, "echo-wat", version="1.10.0-rc.1"))
    store.install("acme", EXAMPLES / "hello-as")
    assert [m.ref for m in store.list("acme")] == [
        "echo-wat@1.0.0", "echo-wat@1.2.0", "echo-wat@1.10.0-rc.1", "echo-wat@1.10.0",
        "hello-as@1.0.0"]
    assert store.list("other") == []
    assert store.get("acme", "echo-wat").ref == "echo-wat@1.10.0"
    assert store.get("acme", "echo-wat", "1.2.0").sha256 == installed.sha256
    # what the store returns is directly loadable and callable
    module = runtime.load(store.get("acme", "hello-as").directory)
    out = runtime.call_sync(module, "handle", {"user": "ada", "org": "acme"}, org="acme")
    assert out["body"]["greeting"] == "hello, ada"
    removed = store.delete("acme", "echo-wat", "1.0.0")
    assert [m.ref for m in removed] == ["echo-wat@1.0.0"]
    assert len(store.delete("acme", "echo-wat")) == 3
    assert not (tmp_path / "data" / "orgs" / "acme" / "ext" / "echo-wat").exists()
    assert [m.ref for m in store.list("acme")] == ["hello-as@1.0.0"]
    with pytest.raises(ExtensionNotFound, match="echo-wat is not installed for org acme"):
        store.get("acme", "echo-wat")


def test_install_conflict_and_replace(tmp_path: Path) -> None:
    store = ModuleStore(tmp_path)
    store.install("acme", EXAMPLES / "echo-wat")
    with pytest.raises(Conflict, match="echo-wat@1.0.0 is already installed for org acme"):
        store.install("acme", EXAMPLES / "echo-wat")
    replaced = store.install("acme", EXAMPLES / "echo-wat", replace=True)
    assert (replaced.directory / "echo.wasm").read_bytes() == (
        EXAMPLES / "echo-wat" / "echo.wasm").read_bytes()
    leftovers = [p.name for p in (tmp_path / "orgs" / "acme" / "ext").iterdir()]
    assert leftovers == ["echo-wat"]  # no staging or retired directories left behind


def test_install_refuses_invalid_extension_without_leaving_files(tmp_path: Path) -> None:
    source = copy_example(tmp_path, "echo-wat")
    (source / "echo.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00junk")
    store = ModuleStore(tmp_path / "data")
    with pytest.raises(InvalidExtension, match="module does not compile"):
        store.install("acme", source)
    assert store.list("acme") == []


@pytest.mark.parametrize(
    "org", ["", "ACME", "../../etc", "acme/../x", "a" * 64, "-x", "acme\x00", "acme\n"],
    ids=["empty", "upper", "traversal", "nested", "too-long", "leading-dash", "nul", "newline"],
)
def test_bad_org_slug_is_rejected_before_touching_disk(tmp_path: Path, org: str) -> None:
    store = ModuleStore(tmp_path / "data")
    actions: list[Callable[[], object]] = [
        lambda: store.install(org, EXAMPLES / "echo-wat"),
        lambda: store.list(org),
        lambda: store.get(org, "echo-wat"),
        lambda: store.delete(org, "echo-wat"),
    ]
    for action in actions:
        with pytest.raises(InvalidArgument, match="invalid org slug"):
            action()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("name", "version"), [("../x", "1.0.0"), ("echo-wat", "../../1")],
                         ids=["name", "version"])
def test_bad_name_or_version_is_rejected(tmp_path: Path, name: str, version: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid extension"):
        ModuleStore(tmp_path).get("acme", name, version)


def run(argv: list[str], data_dir: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli_main(argv, data_dir=data_dir, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_cli_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    status, out, _ = run(["install", "--org", "acme", str(EXAMPLES / "echo-wat")], data)
    assert status == 0 and out.startswith("installed echo-wat@1.0.0 for org acme")
    status, out, _ = run(["ext", "install", "--org", "acme", str(EXAMPLES / "hello-as")], data)
    assert status == 0
    status, out, _ = run(["list", "--org", "acme"], data)
    assert status == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("echo-wat", "1.0.0", "handle", "-"),
                                                        ("hello-as", "1.0.0", "handle", "-")]
    status, out, _ = run(["list", "--org", "acme", "--json"], data)
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["echo-wat", "hello-as"]
    status, out, _ = run(["remove", "--org", "acme", "echo-wat"], data)
    assert (status, out) == (0, "removed echo-wat@1.0.0 from org acme\n")
    status, out, _ = run(["list", "--org", "acme"], data)
    assert out.startswith("hello-as\t")


@pytest.mark.parametrize(
    ("argv", "status", "fragment"),
    [(["install", "--org", "Bad Org", "{echo}"], 2, "invalid org slug 'Bad Org'"),
     (["list", "--org", "../x"], 2, "invalid org slug"),
     (["remove", "--org", "acme", "missing"], 1, "extension missing is not installed"),
     (["install", "--org", "acme", "{nowhere}"], 1, "extension.json: not found"),
     (["install", "--org", "acme", "{echo}", "{echo}"], 2, "unrecognized arguments"),
     (["frobnicate"], 2, "invalid choice"),
     ([], 2, "required")],
    ids=["bad-slug", "bad-slug-list", "missing", "no-manifest", "extra-arg", "bad-command",
         "no-command"],
)
def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                    status: int, fragment: str) -> None:
    argv = [a.replace("{echo}", str(EXAMPLES / "echo-wat"))
             .replace("{nowhere}", str(tmp_path / "nowhere")) for a in argv]
    code, _, err = run(argv, tmp_path / "data")
    assert code == status
    assert fragment in err + capsys.readouterr().err
    assert "Traceback" not in err
