"""Errors raised by the extension runtime; each names the module and the cause."""

from __future__ import annotations

from typing import Any

from hanzocloud.errors import CloudError, NotFound


class ExtensionError(CloudError):
    """Base of every extension error; `details` carries `module`, `export` and `cause`."""

    code = "extension_error"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        module: str = "",
        export: str = "",
        cause: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        merged: dict[str, Any] = dict(details or {})
        if module:
            merged["module"] = module
        if export:
            merged["export"] = export
        if cause:
            merged["cause"] = cause
        super().__init__(message, details=merged)
        self.module = module
        self.export = export
        self.cause = cause


class InvalidExtension(ExtensionError):
    """A manifest or module is malformed, or asks for something the operator forbids."""

    code = "invalid_extension"
    status = 400


class ExtensionNotFound(NotFound):
    """No installed extension (or export) under that name."""

    code = "extension_not_found"


class ExtensionFailed(ExtensionError):
    """The guest trapped, ran out of fuel or memory, or returned unusable output."""

    code = "extension_failed"
    status = 502


class ExtensionTimeout(ExtensionError):
    """The guest exceeded its wall-clock deadline and was interrupted."""

    code = "extension_timeout"
    status = 504
