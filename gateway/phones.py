"""Phone number normalization: the one place that decides what a recipient number is.

Clients in the field send numbers in many shapes (spec §1.8): ``+49 157 52982212``,
``+1- (928) -111-22-33``, and ``" 4915752982212"`` where a ``+`` was decoded as a space
because the client did not URL-encode it. The result is what the phone dials: a ``+`` and
digits for international numbers, digits alone for local numbers and short codes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import phonenumbers

MIN_DIGITS = 3  # short codes such as 112 or 8888
MAX_DIGITS = 15  # E.164
MAX_INPUT_LENGTH = 64

# Punctuation people and spreadsheets put into numbers. Letters are never dropped: a number
# with letters is an error, not something to guess about.
_SEPARATORS = re.compile(r"[\s\-().\/\u00a0\u2010-\u2015\u2212]")


class InvalidPhone(ValueError):
    """The text cannot be a phone number; the message says why, for the API client."""


def normalize_phone(raw: str, *, plus_prefixes: Iterable[str] = ()) -> str:
    """Return the dialable form of ``raw`` or raise InvalidPhone.

    ``plus_prefixes`` is a device's "add a plus if the number starts with" rule: a number
    given without ``+`` that starts with one of them is taken as international.
    """
    # Cached: bulk requests and newsletters repeat numbers, and parsing costs ~10 µs.
    return _normalize(raw, tuple(plus_prefixes))


@lru_cache(maxsize=65536)
def _normalize(raw: str, plus_prefixes: tuple[str, ...]) -> str:
    if raw is None:
        raise InvalidPhone("Phone number is empty")
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidPhone(f"Phone number is longer than {MAX_INPUT_LENGTH} characters")
    # A leading space before a digit other than 0 is a '+' that lost its URL encoding
    # ("sendto=+49..." sent unescaped decodes to " 49..."). A leading 0 is a trunk prefix
    # of a local number, never a country code, so it stays local.
    lost_plus = bool(re.match(r"^ +[1-9]", raw))
    text = raw.strip()
    # "00..." stays as it is: the phone dials it as the international prefix where that is
    # right, which is more than the server can know.
    has_plus = text.startswith("+") or lost_plus
    body = _SEPARATORS.sub("", text.lstrip("+"))
    # Any script's digits (Arabic-Indic, full-width, ...) become ASCII digits.
    digits = phonenumbers.normalize_digits_only(body)
    if not body:
        raise InvalidPhone("Phone number is empty")
    if len(digits) != len(body):
        raise InvalidPhone(f"Phone number has characters other than digits: {raw.strip()!r}")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidPhone(f"Phone number must have {MIN_DIGITS} to {MAX_DIGITS} digits")
    if not has_plus and any(digits.startswith(p) for p in plus_prefixes if p):
        has_plus = True
    if not has_plus:
        return digits
    if digits.startswith("0"):
        raise InvalidPhone("An international number cannot start with +0")
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(f"Unknown country code in {raw.strip()!r}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhone(f"Not a possible international number: {raw.strip()!r}")
    # The digits stay as given: phonenumbers would drop a national prefix it finds after the
    # country code, and second-guessing what the sender typed is not the server's call.
    return "+" + digits


def split_recipients(raw: str) -> list[str]:
    """Split a comma- or semicolon-separated recipient list; empty items are dropped.

    A list whose first number lost its '+' to bad encoding lost every '+': its items keep
    their leading space for normalize_phone to read. Otherwise a space after a comma is
    just a space, and is removed so "491..., 436..." stays two local numbers.
    """
    parts = [part for part in re.split(r"[,;]", raw or "") if part.strip()]
    if parts and re.match(r"^ +[1-9]", parts[0]):
        return parts
    return [part.strip() for part in parts]


def mask_phone(phone: str) -> str:
    """For logs: enough to recognise a number, not enough to read it."""
    return phone[:4] + "…" + phone[-2:] if len(phone) > 6 else "…"
