"""How many SMS segments a text takes (GSM 03.38 7-bit or UCS-2).

Segments are what carriers bill and what Android's sending limit counts, so pacing and
bounds are in segments, not messages.
"""

from __future__ import annotations

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


def encoding_of(text: str) -> Encoding:
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        sizes = [2 if c in GSM7_EXTENDED else 1 for c in text]
        return Encoding("GSM-7", sum(sizes), _segments(sizes, GSM7_SINGLE, GSM7_PART))
    # Android sends UTF-16: a character outside the BMP (most emoji) takes two code units.
    sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Encoding("UCS-2", sum(sizes), _segments(sizes, UCS2_SINGLE, UCS2_PART))


def segment_count(text: str) -> int:
    return encoding_of(text).segments
