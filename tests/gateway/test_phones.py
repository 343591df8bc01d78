import pytest

from gateway.phones import InvalidPhone, normalize_phone, split_recipients


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # spec §1.8 and the wire captures of Appendix A
        ("+4915752982212", "+4915752982212"),
        ("+49 157 52982212", "+4915752982212"),
        ("+1 17642031984", "+117642031984"),
        ("+1- (928) -111-22-33", "+19281112233"),
        # '+' decoded to a space by a client that did not URL-encode (EPY, Go, Spring)
        (" 4915752982212", "+4915752982212"),
        ("  4915752982212 ", "+4915752982212"),
        # local numbers and short codes stay local
        ("015752982212", "015752982212"),
        (" 015752982212", "015752982212"),
        ("0157-529 822/12", "015752982212"),
        ("8888", "8888"),
        ("00491575298221", "00491575298221"),
        # digits of other scripts, non-breaking spaces, dots
        ("+٤٩١٥٧٥٢٩٨٢٢١٢", "+4915752982212"),
        ("+49\u00a0157.5298.2212", "+4915752982212"),
    ],
)
def test_spec_shapes_normalize_to_what_the_phone_dials(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("+", "empty"),
        ("+49 157 CALLME", "other than digits"),
        ("12", "3 to 15 digits"),
        ("+1234567890123456", "3 to 15 digits"),
        ("+0157", r"cannot start with \+0"),
        ("+999 123456", "Unknown country code"),
        ("+44 12", "Not a possible"),
        ("1" * 80, "longer than"),
    ],
)
def test_bad_numbers_are_refused_with_a_reason(raw, why):
    with pytest.raises(InvalidPhone, match=why):
        normalize_phone(raw)


def test_device_prefix_rule_adds_the_plus():
    assert normalize_phone("919812345678", plus_prefixes=["91"]) == "+919812345678"
    assert normalize_phone("0919812345", plus_prefixes=["91"]) == "0919812345"


def test_recipient_lists_split_on_commas_and_keep_a_lost_plus():
    assert split_recipients("+491575,+4366412, ,") == ["+491575", "+4366412"]
    assert split_recipients("015752982212, 06641234567") == ["015752982212", "06641234567"]
    unescaped = split_recipients(" 4915752982212, 436641234567")
    assert [normalize_phone(p) for p in unescaped] == ["+4915752982212", "+436641234567"]
    # without a lost plus on the first number, a space after a comma is only a space
    local = split_recipients("9281112233, 9281112244")
    assert [normalize_phone(p) for p in local] == ["9281112233", "9281112244"]
