"""How many SMS segments a text takes (GSM 03.38 7-bit or UCS-2).

Segments are what carriers bill and what Android's sending limit counts, so pacing and
bounds are in segments, not messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# GSM 03.38 default alphabet (one septet each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: an escape septet plus the character, so each counts twice.
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153  # a concatenation header takes 7 septets per part
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class Encoding:
    name: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def _segments(sizes: list[int], single: int, part: int) -> int:
    """Parts needed when no character (an escape pair, a surrogate pair) is split."""
    if sum(sizes) <= single:
        return 1
    parts, used = 1, 0
    for size in sizes:
        if used + size > part:
            parts, used = parts + 1, 0
        used += size
    return parts


_GSM7_TEXT = re.compile("[" + re.escape("".join(sorted(GSM7_BASIC | GSM7_EXTENDED))) + "]*")
_GSM7_EXTENSION = re.compile("[" + re.escape("".join(sorted(GSM7_EXTENDED))) + "]")
_OUTSIDE_BMP = re.compile("[\U00010000-\U0010ffff]")


def encoding_of(text: str) -> Encoding:
    # Regular expressions scan in C: this runs for every SMS of a bulk request.
    if _GSM7_TEXT.fullmatch(text):
        wide = len(_GSM7_EXTENSION.findall(text))
        name, single, part = "GSM-7", GSM7_SINGLE, GSM7_PART
        sizes = (lambda: [2 if c in GSM7_EXTENDED else 1 for c in text]) if wide else None
    else:
        # Android sends UTF-16: a character outside the BMP (most emoji) takes two units.
        wide = len(_OUTSIDE_BMP.findall(text))
        name, single, part = "UCS-2", UCS2_SINGLE, UCS2_PART
        sizes = (lambda: [2 if ord(c) > 0xFFFF else 1 for c in text]) if wide else None
    units = len(text) + wide
    if units <= single:
        return Encoding(name, units, 1)
    if sizes is None:  # all characters of one size: plain division
        return Encoding(name, units, -(-units // part))
    return Encoding(name, units, _segments(sizes(), single, part))


def segment_count(text: str) -> int:
    return encoding_of(text).segments
