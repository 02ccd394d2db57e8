"""Extension runtime: user code in WebAssembly, served as routes and called as hooks.

See docs/extensions.md for the manifest, the ABI, the envelope and the limits.
"""

from __future__ import annotations

from hanzocloud.ext.cli import cli_main
from hanzocloud.ext.errors import (
    ExtensionError,
    ExtensionFailed,
    ExtensionNotFound,
    ExtensionTimeout,
    InvalidExtension,
)
from hanzocloud.ext.hooks import HookResult, run_hook
from hanzocloud.ext.http import build_envelope, build_response, module_endpoint
from hanzocloud.ext.instance import LoadedModule
from hanzocloud.ext.kv import KvStore, MemoryKvStore
from hanzocloud.ext.limits import Limits
from hanzocloud.ext.manifest import Manifest, load_manifest, parse_manifest
from hanzocloud.ext.runtime import ExtensionRuntime
from hanzocloud.ext.store import InstalledModule, ModuleStore

__all__ = [
    "ExtensionError",
    "ExtensionFailed",
    "ExtensionNotFound",
    "ExtensionRuntime",
    "ExtensionTimeout",
    "HookResult",
    "InstalledModule",
    "InvalidExtension",
    "KvStore",
    "Limits",
    "LoadedModule",
    "Manifest",
    "MemoryKvStore",
    "ModuleStore",
    "build_envelope",
    "build_response",
    "cli_main",
    "load_manifest",
    "module_endpoint",
    "parse_manifest",
    "run_hook",
]
