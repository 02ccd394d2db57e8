"""structlog JSON logs on stderr, with secrets scrubbed before they are written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

from hanzocloud.identity import current_request_id

_SECRET_KEYS = re.compile(
    r"(authorization|password|secret|token|api[_-]?key|cookie|master|dek|kek|credential)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_APIKEY = re.compile(r"\bhk-[A-Za-z0-9_-]{8,}")


def _scrub_text(text: str) -> str:
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _JWT.sub("[redacted-jwt]", text)
    return _APIKEY.sub("hk-[redacted]", text)


def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop values under secret-looking keys, mask tokens in text."""
    for key, value in list(event.items()):
        if key != "event" and _SECRET_KEYS.search(key):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = _scrub_text(value)
    return event


def add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the id of the request being served, if any (read from its
    context variable, so serving a request binds nothing per request)."""
    request_id = current_request_id.get()
    if request_id:
        event.setdefault("request_id", request_id)
    return event


def configure(level: str = "info") -> None:
    """Configure structlog (and stdlib logging, for libraries) to write JSON lines."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    # What every line gets, then how it is written: for structlog's own loggers and for
    # libraries that log through the standard library (uvicorn's errors, for one), which
    # get the logger's name too.
    stamp: list[Processor] = [add_request_id, structlog.processors.add_log_level,
                              structlog.processors.TimeStamper(fmt="iso", utc=True)]
    render: list[Processor] = [structlog.processors.format_exc_info, scrub,
                               structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *stamp, *render],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render])
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "hanzocloud", False)]:
        root.removeHandler(handler)  # configured again: replaced, not doubled
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.hanzocloud = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
