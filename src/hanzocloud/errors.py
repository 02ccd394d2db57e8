"""Error classes shared by every subsystem, each with a stable `code` and HTTP status.

They are mapped to JSON responses in exactly one place (`hanzocloud.http.errors`) and
survive the ZAP wire by `code` (see `hanzocloud.zap`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class CloudError(Exception):
    """Base of every error a client may see; `code` and `status` decide the JSON response."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details or {}


class InvalidArgument(CloudError):
    code = "invalid_argument"
    status = 400


class Unauthenticated(CloudError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(CloudError):
    code = "permission_denied"
    status = 403


class NotFound(CloudError):
    code = "not_found"
    status = 404


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class MethodNotAllowed(CloudError):
    code = "method_not_allowed"
    status = 405


class Conflict(CloudError):
    code = "conflict"
    status = 409


class PayloadTooLarge(CloudError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(CloudError):
    code = "unsupported_media_type"
    status = 415


class Unprocessable(CloudError):
    code = "unprocessable"
    status = 422


class RetryLater(CloudError):
    """An error that tells the client when to try again (the `Retry-After` header)."""

    def __init__(self, message: str = "", *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    code = "rate_limited"
    status = 429


class DeadlineExceeded(CloudError):
    code = "deadline_exceeded"
    status = 504


class Overloaded(RetryLater):
    """The process has more long-running work queued than it takes on; retry shortly."""

    code = "overloaded"
    status = 503


class Busy(RetryLater):
    """Another writer held an org's database for longer than a request waits; retry."""

    code = "busy"
    status = 503


class ShuttingDown(RetryLater):
    """The process stopped (SIGTERM) before this request finished: its drain time ran out."""

    code = "shutting_down"
    status = 503


class SubsystemUnavailable(RetryLater):
    """A dependency is not enabled here and no ZAP address is configured, or it is unreachable."""

    code = "subsystem_unavailable"
    status = 503

    def __init__(self, subsystem: str, message: str = "", **kw: Any) -> None:
        env = f"CLOUD_{subsystem.upper()}_ZAP_ADDR"
        kw.setdefault("retry_after", 5.0)
        super().__init__(
            message
            or f"subsystem '{subsystem}' is not enabled in this process; "
            f"enable it with --enable or set {env} to where it runs",
            **kw,
        )
        self.subsystem = subsystem
        self.details.setdefault("subsystem", subsystem)
        self.details.setdefault("env", env)


class ConfigError(Exception):
    """Bad configuration: the CLI prints the message on one line and exits with status 2."""


ERRORS_BY_CODE: dict[str, type[CloudError]] = {
    cls.code: cls
    for cls in (
        CloudError,
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        TenantNotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        RateLimited,
        DeadlineExceeded,
        Overloaded,
        ShuttingDown,
        SubsystemUnavailable,
    )
}
