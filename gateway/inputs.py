"""What the gateway accepts as text, integers, times and JSON: one rule for every face.

Each API reads its own wire format and passes the values through these checks before any
service sees them, so whatever is stored can be stored on every database and read back and
rendered, in any time zone, by every listing. A value that cannot be is refused up front
with an error naming the field in the caller's words (``InvalidInput``), never discovered
later as a database error or a row that breaks every page it appears on.

- Text: no NUL character (PostgreSQL cannot store it in a text column) and no unpaired UTF-16
  surrogate (it cannot be encoded as UTF-8, so neither stored nor rendered).
- Integers: within the signed 64-bit range of a BigIntegerField unless the column is smaller.
- Times: converted to UTC and range-checked there. A UTC offset is at most ±15:59 (what
  PostgreSQL accepts); a stored time keeps a day away from the ends of the representable
  range (years 1 and 9999), so rendering it in any zone works; a send time is at most
  ``MAX_SCHEDULE_AHEAD`` (10 years) ahead.
- JSON: at most ``MAX_JSON_DEPTH`` levels deep, checked without recursion, and no unpaired
  surrogate in any key or string.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
MAX_SCHEDULE_AHEAD = timedelta(days=3653)  # 10 years, leap days included
MAX_JSON_DEPTH = 32

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class InvalidInput(ValueError):
    """A value no column of ours can hold; ``str()`` is "<field> <problem>" for the client."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def check_text(value: str, field: str) -> str:
    """``value`` unchanged, or InvalidInput if it holds a NUL or an unpaired surrogate."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    if found.group() == "\x00":
        raise InvalidInput(field, "must not contain NUL characters (U+0000)")
    raise InvalidInput(
        field,
        f"contains an unpaired UTF-16 surrogate (U+{ord(found.group()):04X}); "
        "send valid Unicode text",
    )


# How an integer is written in a form field or a query parameter: digits, maybe a minus.
# (Bounded in length so a megabyte of digits never reaches int().)
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,30}")


def integer_text(text: str) -> int | None:
    """The integer ``text`` spells (surrounding blanks allowed), or None if it spells none."""
    stripped = text.strip()
    return int(stripped) if _INTEGER_TEXT.fullmatch(stripped) else None


def check_int(value: int, field: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    if not minimum <= value <= maximum:
        raise InvalidInput(field, f"must be between {minimum} and {maximum}")
    return value


def to_utc(moment: datetime, field: str) -> datetime:
    """``moment`` (aware; naive means UTC) as a UTC time, any representable instant.

    For filters: a bound compares with stored times, but is never stored or rendered.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise InvalidInput(field, "has a UTC offset beyond ±15:59")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            field, "is out of range: in UTC it must fall within the years 1 to 9999"
        ) from None


def stored_time(moment: datetime, field: str) -> datetime:
    """``moment`` in UTC, or InvalidInput unless it is safe to store and render anywhere."""
    utc = to_utc(moment, field)
    if not EARLIEST <= utc <= LATEST:
        raise InvalidInput(
            field, "is out of range: in UTC it must fall between 0001-01-02 and 9999-12-30"
        )
    return utc


def send_time(moment: datetime, field: str, *, now: datetime | None = None) -> datetime:
    """A scheduled send time in UTC: at most MAX_SCHEDULE_AHEAD from now (any past time is
    fine: it means now)."""
    utc = to_utc(moment, field)
    latest = (now or datetime.now(UTC)) + MAX_SCHEDULE_AHEAD
    if utc > latest:
        raise InvalidInput(
            field, f"is too far ahead: at most 10 years from now (until {latest:%Y-%m-%d})"
        )
    return stored_time(utc, field)


def load_json(text: str, *, allow_nan: bool = True) -> Any:
    """Parse JSON and check its depth and strings; ValueError for malformed JSON.

    Python's parser recurses once per nesting level and gives up with a RecursionError a
    little under 1,000 levels deep, wherever the stack happens to be: that is caught here and
    reported like any other over-deep document. The checks after parsing cost a fraction of
    the parse, and are skipped where the text shows they cannot fail (few brackets; no
    surrogate, raw or escaped).
    """
    try:
        data = json.loads(text, parse_constant=None if allow_nan else _refuse_constant)
    except RecursionError:
        raise InvalidInput("JSON body", f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(data)
    if _SURROGATE_ESCAPE.search(text) or (
        not text.isascii() and _SURROGATE.search(text) is not None
    ):
        check_json(data)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_depth(data: Any) -> None:
    """InvalidInput if ``data`` nests deeper than MAX_JSON_DEPTH, named by its top-level key.

    Level by level, without recursion; ``map(type, ...)`` keeps the per-value work in C, so
    a bulk request of 10,000 flat items is checked in a few milliseconds.
    """
    if type(data) is dict:
        tops: Any = data.items()
        depth_of_tops = 2
    else:
        tops, depth_of_tops = [("", data)], 1
    for name, value in tops:
        level = [value] if type(value) is dict or type(value) is list else []
        depth = depth_of_tops
        while level:
            if depth > MAX_JSON_DEPTH:
                shown = _path((name,)) if isinstance(name, str) and name else "JSON body"
                raise InvalidInput(shown, f"is nested deeper than {MAX_JSON_DEPTH} levels")
            deeper: list[Any] = []
            for node in level:
                values = node.values() if type(node) is dict else node
                kinds = set(map(type, values))
                if dict in kinds or list in kinds:
                    deeper.extend(v for v in values if type(v) is dict or type(v) is list)
            level, depth = deeper, depth + 1


def check_json(data: Any) -> None:
    """InvalidInput if ``data`` nests deeper than MAX_JSON_DEPTH or holds an unpaired
    surrogate in a key or string; the error names the path (``smsdata[3].body``).

    Walks with an explicit stack: checking a deep document must not recurse either.
    """
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(data, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(_top(path), f"is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            if isinstance(node, str):
                _check_surrogates(node, path)
            continue
        for key, value in items:
            if isinstance(key, str) and not key.isascii():
                _check_surrogates(key, (*path, key), what="key")
            if isinstance(value, str):
                if not value.isascii():
                    _check_surrogates(value, (*path, key))
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1, (*path, key)))


def _top(path: tuple[str | int, ...]) -> str:
    # A deep node is named by its top-level field: its full path is a wall of [0].
    if path and isinstance(path[0], str):
        return _path(path[:1])
    return "JSON body"


def _check_surrogates(text: str, path: tuple[str | int, ...], *, what: str = "") -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        shown = _path(path) or "JSON body"
        raise InvalidInput(
            f"{shown} (a key)" if what else shown,
            f"contains an unpaired UTF-16 surrogate (U+{ord(found.group()):04X}); "
            "send valid Unicode text",
        )


def _path(path: tuple[str | int, ...]) -> str:
    shown = ""
    for part in path:
        if isinstance(part, int):
            shown += f"[{part}]"
        else:
            # A key is shown as it is unless it would make the path unreadable.
            clean = part if _UNSTORABLE.search(part) is None else ascii(part)
            shown += f".{clean}" if shown else clean
    return shown
