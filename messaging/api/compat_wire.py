"""The SMSGateway24 wire format: reading the parameter bag, rendering answers.

Every mapping between a wire name (``sendto``, ``timetosend``, ``paket``) and our own
vocabulary happens in this module or in ``compat.py`` beside it; nothing deeper knows the
wire names. Contract: ``shared/spec/smsgateway24-api.md`` (§1 conventions, §8 checklist).
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from django.http import HttpRequest, HttpResponse, QueryDict

from gateway import inputs

# Body size bounds. Bulk (addalotofsms) is bounded to MAX_BATCH items by the service and
# to this many bytes here; every other method needs far less.
MAX_BULK_BODY_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES = 256 * 1024


class CompatError(Exception):
    """Rendered as {"error":1,"message":...} with HTTP 200, as clients expect."""


def answer(payload: dict[str, Any]) -> HttpResponse:
    # Compact JSON, keys in the order the spec's samples show (dicts keep insertion order).
    return HttpResponse(orjson.dumps(payload), content_type="application/json")


def error(message: str, **extra: Any) -> HttpResponse:
    return answer({"error": 1, "message": message, **extra})


def parameters(request: HttpRequest, *, max_bytes: int) -> dict[str, Any]:
    """One bag from the query string, a form (urlencoded or multipart) or a JSON body.

    The query string wins on conflicts, as Symfony's Request::get() does on the hosted
    service. A body is read as JSON when it is declared JSON or looks like a JSON object
    (clients send JSON with a form content type), otherwise as urlencoded, whatever the
    content type says, so an undeclared or unescaped form body still works.
    """
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > max_bytes:
        raise CompatError(f"Request body is larger than {max_bytes // 1024} KB")
    bag: dict[str, Any] = {}
    content_type = request.content_type or ""
    if request.method == "POST" and content_type == "multipart/form-data":
        bag.update(request.POST.dict())
    else:
        body = request.body
        if len(body) > max_bytes:
            raise CompatError(f"Request body is larger than {max_bytes // 1024} KB")
        if body.strip():
            bag.update(_parse_body(body, content_type, request.encoding or "utf-8"))
    bag.update(request.GET.dict())
    return bag


def _parse_body(body: bytes, content_type: str, encoding: str) -> dict[str, Any]:
    text = body.decode(encoding, errors="replace")
    stripped = text.lstrip()
    if content_type == "application/json" or stripped.startswith("{"):
        try:
            parsed = load_json(text, "Request body")
        except ValueError as exc:
            if content_type == "application/json":
                raise CompatError(f"Request body is not valid JSON: {exc}") from None
        else:
            if not isinstance(parsed, dict):
                raise CompatError("JSON body must be an object")
            return parsed
    return QueryDict(body, encoding=encoding).dict()


def load_json(text: str, name: str) -> Any:
    """JSON within the bounds of gateway.inputs (depth, valid Unicode): CompatError if it
    is JSON we refuse, ValueError if it is not JSON at all."""
    try:
        return inputs.load_json(text)
    except inputs.InvalidInput as exc:
        field = name if exc.field == "JSON body" else exc.field
        raise CompatError(f"{field} {exc.problem}") from None


class Params:
    """Typed reads from a parameter bag; each failure is a CompatError naming the field."""

    def __init__(self, bag: dict[str, Any]) -> None:
        self.bag = bag

    def raw(self, *names: str) -> Any:
        for name in names:
            value = self.bag.get(name)
            if value is not None:
                return value
        return None

    def text(self, *names: str, required: bool = False, max_length: int = 10_000) -> str:
        value = self.raw(*names)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise CompatError(f"{names[0]} must be a string")
        text = value or ""
        if required and not text.strip():
            raise CompatError(f"{names[0]} is required")
        if len(text) > max_length:
            raise CompatError(f"{names[0]} is longer than {max_length} characters")
        return check_text(text, names[0])

    def integer(
        self,
        *names: str,
        required: bool = False,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = parse_int(self.raw(*names), names[0])
        if value is None:
            if required:
                raise CompatError(f"{names[0]} is required")
            return default
        low = inputs.INT64_MIN if minimum is None else minimum
        high = inputs.INT64_MAX if maximum is None else maximum
        if not low <= value <= high:
            raise CompatError(f"{names[0]} must be between {low} and {high}")
        return value

    def flag(self, *names: str) -> bool:
        return parse_flag(self.raw(*names), names[0])


def check_text(text: str, name: str) -> str:
    try:
        return inputs.check_text(text, name)
    except inputs.InvalidInput as exc:
        raise CompatError(str(exc)) from None


def parse_int(value: Any, name: str) -> int | None:
    """An integer from 12, "12", " 12 ", 12.0, within the signed 64-bit range of our id and
    number columns; None for absent or "". true/false are not integers (JSON's true is not
    device 1)."""
    number: int | None = None
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        if value.strip() == "":
            return None
        number = inputs.integer_text(value)
    if number is None:
        raise CompatError(f"{name} must be an integer")
    if not inputs.INT64_MIN <= number <= inputs.INT64_MAX:
        raise CompatError(
            f"{name} must be an integer between {inputs.INT64_MIN} and {inputs.INT64_MAX}"
        )
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", "", "null"}


def parse_flag(value: Any, name: str) -> bool:
    """urgent and friends: 1/0, "1"/"0", true/false (either type), "" and absent (false)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise CompatError(f"{name} must be 0 or 1")


# Formats clients send (spec §1.6, §2.11). fromisoformat covers Y-m-d, Y-m-d H:i and
# Y-m-d H:i:s (and the ISO forms with T); d.m.Y forms are the newsletter's.
_DOTTED = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")


def parse_time(
    value: Any, name: str, zone: ZoneInfo, *, end_of_day: bool = False, schedule: bool = False
) -> datetime | None:
    """A client's date or date-time, read in ``zone`` when it carries no offset, in UTC.

    A bare date means its first second, or with ``end_of_day`` its last (for enddate).
    Range-checked in UTC (gateway.inputs): a filter bound may be any representable time, a
    send time (``schedule``) is stored and so at most 10 years ahead.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise CompatError(f"{name} must be a date such as 2024-01-31 or 2024-01-31 10:00:00")
    text = value.strip()
    parsed: datetime | None = None
    date_only = len(text) == 10
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _DOTTED:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        raise CompatError(f"{name} must be a date such as 2024-01-31 or 2024-01-31 10:00:00")
    if date_only and end_of_day:
        parsed = datetime.combine(parsed.date(), time(23, 59, 59, 999999))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        return inputs.send_time(parsed, name) if schedule else inputs.to_utc(parsed, name)
    except inputs.InvalidInput as exc:
        raise CompatError(str(exc)) from None


# What IANA zone names are made of; anything else is refused before the zone files are read.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


def parse_zone(value: Any) -> ZoneInfo | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise CompatError("timezone must be a time zone name such as Europe/Berlin")
    if not _ZONE_NAME.fullmatch(value.strip()):
        raise CompatError(f"Unknown timezone {value.strip()!r}; use a name such as Europe/Berlin")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise CompatError(
            f"Unknown timezone {value.strip()!r}; use a name such as Europe/Berlin"
        ) from None


def php_datetime(value: datetime | None, zone: ZoneInfo) -> dict[str, Any] | None:
    """A time as PHP's DateTime serializes it (spec §1.6), in ``zone``, second precision."""
    if value is None:
        return None
    return php_local(f"{value.astimezone(zone):%Y-%m-%d %H:%M:%S}", zone)


def php_local(local: str | None, zone: ZoneInfo) -> dict[str, Any] | None:
    """php_datetime of a time already written in ``zone`` ("YYYY-MM-DD HH:MM:SS")."""
    if local is None:
        return None
    return {"date": f"{local}.000000", "timezone_type": 3, "timezone": zone.key}


def human_datetime(value: datetime, zone: ZoneInfo) -> str:
    """The d.m.Y H:i:s form of getalldevices' *humanformat fields."""
    return f"{value.astimezone(zone):%d.%m.%Y %H:%M:%S}"
