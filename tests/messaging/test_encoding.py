import pytest

from messaging.encoding import encoding_of, segment_count


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters count twice
        ("€" * 81, "GSM-7", 2),
        ("é" * 160, "GSM-7", 1),  # in the basic table
        ("ж" * 70, "UCS-2", 1),
        ("ж" * 71, "UCS-2", 2),
        ("ж" * 134, "UCS-2", 2),
        ("ж" * 135, "UCS-2", 3),
        ("😀" * 35, "UCS-2", 1),  # outside the BMP: two UTF-16 units each
        ("😀" * 36, "UCS-2", 2),
    ],
)
def test_segments_follow_gsm_and_ucs2_limits(text, encoding, segments):
    assert encoding_of(text).name == encoding
    assert segment_count(text) == segments


def test_an_escape_pair_is_never_split_across_parts():
    # 306 septets would fit two parts of 153, but 152 + the euro's 2 does not fit the first
    # part: the euro moves to the second, and its last character spills into a third.
    text = "a" * 152 + "€" + "a" * 152
    assert encoding_of(text).units == 306
    assert segment_count(text) == 3
