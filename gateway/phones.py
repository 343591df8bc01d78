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
    if raw is None:
        raise InvalidPhone("Phone number is empty")
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidPhone(f"Phone number is longer than {MAX_INPUT_LENGTH} characters")
    # Cached: bulk requests and newsletters repeat numbers.
    return _normalize(raw, tuple(plus_prefixes))


_CLEAN = re.compile(r"\+?[0-9]{1,64}")


@lru_cache(maxsize=65536)
def _normalize(raw: str, plus_prefixes: tuple[str, ...]) -> str:
    if _CLEAN.fullmatch(raw):
        # Already clean (most API traffic): skip the separator and script handling.
        has_plus, digits = raw.startswith("+"), raw.lstrip("+")
    else:
        # A leading space before a digit other than 0 is a '+' that lost its URL encoding
        # ("sendto=+49..." sent unescaped decodes to " 49..."). A leading 0 is a trunk
        # prefix of a local number, never a country code, so it stays local.
        lost_plus = bool(re.match(r"^ +[1-9]", raw))
        text = raw.strip()
        # "00..." stays as it is: the phone dials it as the international prefix where that
        # is right, which is more than the server can know.
        has_plus = text.startswith("+") or lost_plus
        body = _SEPARATORS.sub("", text.lstrip("+"))
        if not body:
            raise InvalidPhone("Phone number is empty")
        # Any script's digits (Arabic-Indic, full-width, ...) become ASCII digits.
        digits = body if body.isascii() else phonenumbers.normalize_digits_only(body)
        if len(digits) != len(body) or not digits.isdigit():
            raise InvalidPhone(f"Phone number has characters other than digits: {text!r}")
    if not digits:
        raise InvalidPhone("Phone number is empty")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidPhone(f"Phone number must have {MIN_DIGITS} to {MAX_DIGITS} digits")
    if not has_plus and any(digits.startswith(p) for p in plus_prefixes if p):
        has_plus = True
    if not has_plus:
        return digits
    _check_international(digits, raw.strip())
    # The digits stay as given: second-guessing what the sender typed (a national prefix
    # after the country code, say) is not the server's call.
    return "+" + digits


def _check_international(digits: str, shown: str) -> None:
    """A known country code followed by a national number of a length that country uses."""
    if digits.startswith("0"):
        raise InvalidPhone("An international number cannot start with +0")
    for size in (1, 2, 3):
        lengths = _national_lengths(int(digits[:size]))
        if lengths is not None:
            break
    else:
        raise InvalidPhone(f"Unknown country code in {shown!r}")
    possible, trunk_prefixes = lengths
    national = digits[size:]
    if len(national) in possible:
        return
    # People write the national trunk prefix after the country code (+1 1..., +49 0...);
    # the number is possible if it is without it.
    if any(national.startswith(p) and len(national) - len(p) in possible for p in trunk_prefixes):
        return
    raise InvalidPhone(f"Not a possible international number: {shown!r}")


@lru_cache(maxsize=512)
def _national_lengths(country_code: int) -> tuple[frozenset[int], tuple[str, ...]] | None:
    """Possible national number lengths and trunk prefixes of a country calling code."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions:
        return None
    lengths: set[int] = set()
    prefixes: set[str] = set()
    for region in regions:
        metadata = (
            phonenumbers.PhoneMetadata.metadata_for_nongeo_region(country_code)
            if region == "001"
            else phonenumbers.PhoneMetadata.metadata_for_region(region)
        )
        if metadata is None or metadata.general_desc is None:
            continue
        lengths.update(metadata.general_desc.possible_length or ())
        lengths.update(metadata.general_desc.possible_length_local_only or ())
        if metadata.national_prefix:
            prefixes.add(metadata.national_prefix)
    return frozenset(lengths), tuple(sorted(prefixes))


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
