"""ModuleStore: org-uploaded extensions under `{data_dir}/orgs/{org}/ext/{name}/{version}/`."""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from hanzocloud.errors import Conflict, InvalidArgument
from hanzocloud.ext.abi import check_module
from hanzocloud.ext.errors import ExtensionNotFound, InvalidExtension
from hanzocloud.ext.manifest import (
    MANIFEST_FILE,
    NAME_RE,
    VERSION_RE,
    Manifest,
    load_manifest,
)
from hanzocloud.ext.runtime import MAX_MODULE_BYTES, ORG_RE, WASM_MAGIC


@dataclass(frozen=True, slots=True)
class InstalledModule:
    """An extension stored for an org: its manifest, directory and wasm digest."""

    org: str
    manifest: Manifest
    directory: Path
    sha256: str

    @property
    def ref(self) -> str:
        """`name@version`."""
        return self.manifest.ref


def version_key(version: str) -> tuple[tuple[int, int, int], int, str]:
    """Sort key for semantic versions: a pre-release sorts before its release."""
    core, _, pre = version.partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    return (major, minor, patch), 0 if pre else 1, pre


def _check_slug(org: str) -> str:
    if not isinstance(org, str) or not ORG_RE.fullmatch(org):
        raise InvalidArgument(f"invalid org slug {org!r}: must match ^[a-z0-9][a-z0-9-]{{0,62}}$")
    return org


class ModuleStore:
    """Install, list, fetch and delete an org's extensions; every path is validated first."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._engine: wasmtime.Engine | None = None

    def _root(self, org: str) -> Path:
        return self.data_dir / "orgs" / _check_slug(org) / "ext"

    def _dir(self, org: str, name: str, version: str) -> Path:
        if not NAME_RE.fullmatch(name):
            raise InvalidArgument(f"invalid extension name {name!r}")
        if not VERSION_RE.fullmatch(version):
            raise InvalidArgument(f"invalid extension version {version!r}")
        return self._root(org) / name / version

    def _validate(self, source: Path) -> tuple[Manifest, bytes]:
        manifest = load_manifest(source)
        path = source / manifest.module
        if not path.is_file():
            raise InvalidExtension(f"extension {manifest.ref}: {path} not found",
                                   module=manifest.ref, cause="module")
        if path.stat().st_size > MAX_MODULE_BYTES:
            raise InvalidExtension(f"extension {manifest.ref}: {path} is over "
                                   f"{MAX_MODULE_BYTES} bytes", module=manifest.ref,
                                   cause="module")
        wasm = path.read_bytes()
        if not wasm.startswith(WASM_MAGIC):
            raise InvalidExtension(f"extension {manifest.ref}: {path} is not a WebAssembly "
                                   f"binary", module=manifest.ref, cause="module")
        if self._engine is None:
            self._engine = wasmtime.Engine()
        try:
            compiled = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            reason = str(exc).strip().splitlines()[0]
            raise InvalidExtension(f"extension {manifest.ref}: module does not compile: "
                                   f"{reason}", module=manifest.ref, cause="module") from None
        check_module(compiled, manifest)
        return manifest, wasm

    def install(self, org: str, source: Path, *, replace: bool = False) -> InstalledModule:
        """Validate the extension in `source` and store it for `org`; Conflict if present."""
        root = self._root(org)
        manifest, wasm = self._validate(Path(source))
        target = self._dir(org, manifest.name, manifest.version)
        if target.exists() and not replace:
            raise Conflict(f"extension {manifest.ref} is already installed for org {org}; "
                           f"remove it first or install with --replace")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            for name, data in ((MANIFEST_FILE, manifest.model_dump_json(indent=2).encode()),
                               (manifest.module, wasm)):
                with open(staging / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=".retired-", dir=root))
                os.replace(target, retired / "old")
                os.replace(staging, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return InstalledModule(org=org, manifest=manifest, directory=target,
                               sha256=hashlib.sha256(wasm).hexdigest())

    def _read(self, org: str, directory: Path) -> InstalledModule:
        manifest = load_manifest(directory)
        wasm = (directory / manifest.module).read_bytes()
        return InstalledModule(org=org, manifest=manifest, directory=directory,
                               sha256=hashlib.sha256(wasm).hexdigest())

    def list(self, org: str) -> list[InstalledModule]:
        """Every extension version installed for `org`, by name then version."""
        root = self._root(org)
        found: list[InstalledModule] = []
        if not root.is_dir():
            return found
        for name_dir in sorted(root.iterdir()):
            if not name_dir.is_dir() or not NAME_RE.fullmatch(name_dir.name):
                continue
            versions = [v for v in name_dir.iterdir()
                        if v.is_dir() and VERSION_RE.fullmatch(v.name)]
            for version_dir in sorted(versions, key=lambda v: version_key(v.name)):
                found.append(self._read(org, version_dir))
        return found

    def get(self, org: str, name: str, version: str | None = None) -> InstalledModule:
        """One installed extension; the highest version when `version` is None."""
        if version is not None:
            directory = self._dir(org, name, version)
            if not (directory / MANIFEST_FILE).is_file():
                raise ExtensionNotFound(f"extension {name}@{version} is not installed "
                                        f"for org {org}")
            return self._read(org, directory)
        candidates = [m for m in self.list(org) if m.manifest.name == name]
        if not candidates:
            self._dir(org, name, "0.0.0")  # validates the name before reporting
            raise ExtensionNotFound(f"extension {name} is not installed for org {org}")
        return candidates[-1]

    def delete(self, org: str, name: str,
               version: str | None = None) -> builtins.list[InstalledModule]:
        """Remove one version (or all versions) of an extension; returns what was removed."""
        if version is not None:
            removed = [self.get(org, name, version)]
        else:
            removed = [m for m in self.list(org) if m.manifest.name == name]
            if not removed:
                self._dir(org, name, "0.0.0")
                raise ExtensionNotFound(f"extension {name} is not installed for org {org}")
        for item in removed:
            shutil.rmtree(item.directory)
        name_dir = self._root(org) / name
        if name_dir.is_dir() and not any(name_dir.iterdir()):
            name_dir.rmdir()
        return removed
