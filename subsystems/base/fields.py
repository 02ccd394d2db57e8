"""Field types: their options, how a value is validated and stored, and how it is shown.

Stored forms follow PocketBase: empty values are zero values rather than NULL (text `''`,
number `0`, bool `0`), multi-valued select and relation fields are JSON arrays of strings,
dates are `YYYY-MM-DD HH:MM:SS.mmmZ` text so that they compare as strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from hanzocloud.errors import InvalidArgument
from subsystems.base.util import check_name, format_time, parse_time, valid_id

TYPES = ("text", "number", "bool", "email", "url", "date", "autodate", "select", "json",
         "relation")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
_MAX_PATTERN = 256
_MAX_TEXT = 1_000_000
_COMMON = {"id", "name", "type", "required", "unique", "hidden", "presentable", "system"}
_OPTIONS: dict[str, set[str]] = {
    "text": {"min", "max", "pattern"},
    "number": {"min", "max", "onlyInt"},
    "bool": set(),
    "email": {"onlyDomains", "exceptDomains"},
    "url": {"onlyDomains", "exceptDomains"},
    "date": {"min", "max"},
    "autodate": {"onCreate", "onUpdate"},
    "select": {"values", "maxSelect"},
    "json": {"maxSize"},
    "relation": {"collectionId", "maxSelect", "minSelect", "cascadeDelete"},
}


class FieldError(Exception):
    """One field's validation failure, reported PocketBase-style under `data.<field>`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Field:
    """One user-defined field of a collection."""

    id: str
    name: str
    type: str
    required: bool = False
    unique: bool = False
    hidden: bool = False
    presentable: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def multi(self) -> bool:
        """Whether the field holds a list (select/relation with maxSelect > 1)."""
        return self.type in ("select", "relation") and int(self.options.get("maxSelect", 1)) > 1

    @property
    def target(self) -> str:
        """The target collection id of a relation field."""
        return str(self.options.get("collectionId", ""))

    def to_json(self) -> dict[str, Any]:
        """The field as the collections API shows it."""
        return {"id": self.id, "name": self.name, "type": self.type, "system": False,
                "required": self.required, "unique": self.unique, "hidden": self.hidden,
                "presentable": self.presentable, **self.options}

    # -- values ---------------------------------------------------------------------------

    def default(self) -> Any:
        """The stored zero value."""
        if self.type == "number":
            return 0
        if self.type == "bool":
            return False
        if self.type == "json":
            return None
        return "[]" if self.multi else ""

    def normalize(self, value: Any) -> Any:
        """Validate a client value and return its stored form, or raise FieldError."""
        stored = _NORMALIZERS[self.type](self, value)
        if self.required and _is_empty(self, stored):
            raise FieldError("validation_required", "Cannot be blank.")
        return stored

    def present(self, stored: Any) -> Any:
        """The JSON value of a stored value."""
        return self.presenter()(stored)

    def presenter(self) -> Callable[[Any], Any]:
        """The function `present` applies (to look up once for many rows)."""
        if self.type in _PRESENTERS:
            return _PRESENTERS[self.type]
        return _present_list if self.multi else _present_text


def _present_number(stored: Any) -> Any:
    if stored is None:
        return 0
    number = float(stored)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _present_json(stored: Any) -> Any:
    return None if stored is None else msgspec.json.decode(stored)


def _present_list(stored: Any) -> Any:
    return msgspec.json.decode(stored) if stored else []


def _present_text(stored: Any) -> Any:
    return "" if stored is None else stored


_PRESENTERS: dict[str, Callable[[Any], Any]] = {
    "bool": bool, "number": _present_number, "json": _present_json}


def _is_empty(f: Field, stored: Any) -> bool:
    if f.type == "number":
        return bool(stored == 0)
    if f.type == "bool":
        return stored is False
    if f.type == "json":
        return stored is None or stored in ("null", '""', "[]", "{}")
    return stored in ("", "[]")


def _text(f: Field, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError("validation_invalid_value", "Must be a string.")
    text = str(value)
    lo, hi = int(f.options.get("min") or 0), int(f.options.get("max") or 0)
    if text and lo and len(text) < lo:
        raise FieldError("validation_min_text_constraint", f"Must be at least {lo} character(s).")
    if len(text) > (hi or _MAX_TEXT):
        raise FieldError("validation_max_text_constraint",
                         f"Must be less than {hi or _MAX_TEXT} character(s).")
    pattern = f.options.get("pattern") or ""
    if text and pattern and re.search(pattern, text) is None:
        raise FieldError("validation_invalid_format", "Invalid value format.")
    return text


def _number(f: Field, value: Any) -> float | int:
    if value is None or value == "":
        number: float = 0
    elif isinstance(value, bool):
        raise FieldError("validation_invalid_number", "Must be a number.")
    elif isinstance(value, int | float):
        number = value if isinstance(value, float) or abs(value) < 2**53 else float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise FieldError("validation_invalid_number", "Must be a number.") from None
    else:
        raise FieldError("validation_invalid_number", "Must be a number.")
    if not math.isfinite(number):
        raise FieldError("validation_invalid_number", "Must be a finite number.")
    if f.options.get("onlyInt") and not float(number).is_integer():
        raise FieldError("validation_only_int_constraint", "Decimal numbers are not allowed.")
    lo, hi = f.options.get("min"), f.options.get("max")
    if lo is not None and number < lo:
        raise FieldError("validation_min_number_constraint", f"Must be larger than {lo}.")
    if hi is not None and number > hi:
        raise FieldError("validation_max_number_constraint", f"Must be less than {hi}.")
    return number


def _bool(_: Field, value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1", "true", "false"):
        return value in (1, "1", "true")
    raise FieldError("validation_invalid_bool", "Must be a boolean.")


def _domain_check(f: Field, host: str) -> None:
    host = host.lower()
    only = [d.lower() for d in f.options.get("onlyDomains") or []]
    never = [d.lower() for d in f.options.get("exceptDomains") or []]
    if (only and host not in only) or host in never:
        raise FieldError("validation_domain_not_allowed", "Domain is not allowed.")


def _email(f: Field, value: Any) -> str:
    text = _plain_string(value)
    if text:
        if len(text) > 320 or _EMAIL.match(text) is None:
            raise FieldError("validation_is_email", "Must be a valid email address.")
        _domain_check(f, text.rsplit("@", 1)[1])
    return text


def _url(f: Field, value: Any) -> str:
    text = _plain_string(value)
    if text:
        try:
            parts = urlsplit(text) if len(text) <= 2048 else None
        except ValueError:  # an unbalanced "[" of an IPv6 host, say
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise FieldError("validation_is_url", "Must be a valid url.")
        _domain_check(f, parts.hostname)
    return text


def _date(f: Field, value: Any) -> str:
    text = _plain_string(value)
    if not text:
        return ""
    moment = parse_time(text)
    if moment is None:
        raise FieldError("validation_invalid_date", "Must be a valid date.")
    stored = format_time(moment)
    lo, hi = f.options.get("min") or "", f.options.get("max") or ""
    if lo and stored < lo:
        raise FieldError("validation_min_date_constraint", f"Must be after {lo}.")
    if hi and stored > hi:
        raise FieldError("validation_max_date_constraint", f"Must be before {hi}.")
    return stored


def _autodate(_: Field, value: Any) -> str:
    # Clients never set autodate fields; the record service stamps them.
    return "" if value is None else str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list) else [value]


def _select(f: Field, value: Any) -> str:
    allowed = f.options.get("values") or []
    items = _as_list(value)
    for item in items:
        if not isinstance(item, str) or item not in allowed:
            raise FieldError("validation_invalid_value", f"Invalid value {item!r}.")
    return _pack_list(f, items)


def _pack_list(f: Field, items: list[Any]) -> str:
    unique = list(dict.fromkeys(items))
    most = int(f.options.get("maxSelect", 1))
    if len(unique) > most:
        raise FieldError("validation_too_many_values", f"Select no more than {most}.")
    least = int(f.options.get("minSelect") or 0)
    if unique and len(unique) < least:
        raise FieldError("validation_not_enough_values", f"Select at least {least}.")
    if f.multi:
        return msgspec.json.encode(unique).decode()
    return unique[0] if unique else ""


def _relation(f: Field, value: Any) -> str:
    items = _as_list(value)
    for item in items:
        if not valid_id(item):
            raise FieldError("validation_invalid_relation", f"Invalid record id {item!r}.")
    return _pack_list(f, items)


MAX_JSON_DEPTH = 64  # nesting a json field may hold: deeper values could not be read back


def _depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (iteratively: it may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((v, level + 1) for v in
                             (item.values() if isinstance(item, dict) else item))
    return deepest


def _json(f: Field, value: Any) -> str | None:
    if value is None:
        return None
    if _depth(value) > MAX_JSON_DEPTH:
        raise FieldError("validation_json_too_deep",
                         f"Must nest lists and objects at most {MAX_JSON_DEPTH} levels deep.")
    encoded = msgspec.json.encode(value)
    limit = int(f.options.get("maxSize") or 1_000_000)
    if len(encoded) > limit:
        raise FieldError("validation_json_size_limit", f"Must be less than {limit} bytes.")
    return encoded.decode()


def _plain_string(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError("validation_invalid_value", "Must be a string.")
    return value.strip()


_NORMALIZERS = {"text": _text, "number": _number, "bool": _bool, "email": _email, "url": _url,
                "date": _date, "autodate": _autodate, "select": _select, "json": _json,
                "relation": _relation}


# -- definitions ----------------------------------------------------------------------------


def _bad(name: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"field '{name}': {message}",
                           details={"fields": {name: {"code": "validation_invalid_field",
                                                      "message": message}}})


def _int_opt(name: str, raw: dict[str, Any], key: str, *, low: int = 0) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(name, f"option '{key}' must be an integer >= {low}")
    return value


def parse_field(raw: Any, *, field_id: str, resolve_collection: Any) -> Field:
    """Validate one field definition from the collections API."""
    if not isinstance(raw, dict):
        raise InvalidArgument("each field must be an object")
    name = check_name(raw.get("name"), "field")
    ftype = raw.get("type")
    if ftype not in TYPES:
        raise _bad(name, f"unknown type {ftype!r}; use one of {', '.join(TYPES)}")
    unknown = set(raw) - _COMMON - _OPTIONS[ftype]
    if unknown:
        raise _bad(name, f"unknown option(s) {', '.join(sorted(unknown))} for type {ftype}")
    flags = {}
    for key in ("required", "unique", "hidden", "presentable"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise _bad(name, f"option '{key}' must be true or false")
        flags[key] = value
    options: dict[str, Any] = {}
    if ftype == "text":
        options["min"] = _int_opt(name, raw, "min") or 0
        options["max"] = _int_opt(name, raw, "max") or 0
        pattern = raw.get("pattern") or ""
        if not isinstance(pattern, str) or len(pattern) > _MAX_PATTERN:
            raise _bad(name, f"pattern must be a string of at most {_MAX_PATTERN} characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _bad(name, f"invalid pattern: {exc}") from None
        options["pattern"] = pattern
    elif ftype == "number":
        for key in ("min", "max"):
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, int | float) or
                                      not math.isfinite(value)):
                raise _bad(name, f"option '{key}' must be a number or null")
            options[key] = value
        options["onlyInt"] = bool(raw.get("onlyInt", False))
    elif ftype in ("email", "url"):
        for key in ("onlyDomains", "exceptDomains"):
            value = raw.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad(name, f"option '{key}' must be a list of domains")
            options[key] = value
    elif ftype == "date":
        for key in ("min", "max"):
            value = raw.get(key) or ""
            moment = parse_time(value) if isinstance(value, str) and value else None
            if value and moment is None:
                raise _bad(name, f"option '{key}' must be a date")
            options[key] = format_time(moment) if moment else ""
    elif ftype == "autodate":
        options["onCreate"] = bool(raw.get("onCreate", True))
        options["onUpdate"] = bool(raw.get("onUpdate", False))
    elif ftype == "select":
        values = raw.get("values")
        if (not isinstance(values, list) or not values or len(values) > 1000
                or not all(isinstance(v, str) and v for v in values)
                or len(set(values)) != len(values)):
            raise _bad(name, "option 'values' must be a non-empty list of distinct strings")
        options["values"] = values
        options["maxSelect"] = _int_opt(name, raw, "maxSelect", low=1) or 1
    elif ftype == "json":
        options["maxSize"] = _int_opt(name, raw, "maxSize") or 0
    elif ftype == "relation":
        options["collectionId"] = resolve_collection(raw.get("collectionId"), name)
        options["maxSelect"] = _int_opt(name, raw, "maxSelect", low=1) or 1
        options["minSelect"] = _int_opt(name, raw, "minSelect") or 0
        options["cascadeDelete"] = bool(raw.get("cascadeDelete", False))
    if flags["unique"] and (ftype in ("json", "bool", "autodate") or
                            (ftype in ("select", "relation") and options["maxSelect"] > 1)):
        raise _bad(name, f"unique is not supported for {ftype} fields of this kind")
    return Field(id=field_id, name=name, type=ftype, options=options, **flags)
