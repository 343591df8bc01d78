"""Hostile input in the admin: bad filters, searches, imports and times get a clear answer,
never a 500."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from contacts.models import Contact, Newsletter, Tag
from gateway.models import User


@pytest.fixture
def superuser(make_user, paired):
    user = make_user("root@example.com", "pw-long-enough", is_staff=True, is_superuser=True)
    device, _ = paired(account=user.account, title="Pixel")
    # Each list filter shows (and reads its parameter) once it has something to offer.
    Newsletter.objects.create(account=user.account, title="n", device=device, body="b")
    client = Client()
    client.force_login(user)
    return client, user.account, device


@pytest.mark.parametrize(
    "query",
    ["device=abc", "sim=abc", "newsletter=abc", "device=-1", "sim=99999", f"device={2**64}"],
)
def test_a_list_filter_value_that_is_not_an_id_is_a_bad_lookup_not_a_500(superuser, query):
    client, _account, _device = superuser
    url = reverse("admin:messaging_message_changelist")
    response = client.get(f"{url}?{query}")
    assert response.status_code == 302 and response["Location"].endswith("?e=1")
    assert client.get(response["Location"]).status_code == 200


def test_list_filters_with_ids_still_filter(superuser):
    client, _account, device = superuser
    url = reverse("admin:messaging_message_changelist")
    newsletter = Newsletter.objects.get()
    for query in (f"device={device.pk}", "sim=1", f"newsletter={newsletter.pk}"):
        assert client.get(f"{url}?{query}").status_code == 200, query


@pytest.mark.parametrize("model", ["contacts_contact", "contacts_tag", "devices_device"])
def test_a_search_term_with_a_nul_finds_nothing_instead_of_failing(superuser, model):
    client, account, _device = superuser
    Contact.objects.create(account=account, phone="+4915700000001", name="Anna")
    response = client.get(reverse(f"admin:{model}_changelist"), {"q": "An\x00na"})
    assert response.status_code == 200


def test_the_admin_csv_import_reports_rows_with_a_nul_or_an_oversized_field(superuser):
    client, account, _device = superuser
    content = (
        b"phone,name\n+4915700000001,Anna\n+4915700000002,Be\x00n\n+4915700000003,"
        + b"y" * 200_000
        + b"\n+4915700000004,Dora\n"
    )
    response = client.post(
        reverse("admin:contacts_contact_import"), {"file": SimpleUploadedFile("c.csv", content)}
    )
    text = response.content.decode()
    assert response.status_code == 200
    assert "2 contacts created, 0 updated, 2 rows with errors." in text
    assert "name must not contain NUL characters" in text
    assert "field larger than field limit" in text
    assert sorted(Contact.objects.filter(account=account).values_list("name", flat=True)) == [
        "Anna",
        "Dora",
    ]


def test_the_admin_csv_import_without_a_phone_column_says_so(superuser):
    client, _account, _device = superuser
    response = client.post(
        reverse("admin:contacts_contact_import"),
        {"file": SimpleUploadedFile("c.csv", b"name\nAnna\n")},
    )
    assert "at least &#x27;phone&#x27;" in response.content.decode()
    assert Contact.objects.count() == 0


def test_a_time_at_the_end_of_the_calendar_is_a_form_error_in_any_admin_form(superuser):
    client, account, _device = superuser
    user = User.objects.create_user("late@example.com", "pw-long-enough", account=account)
    fields = {
        "email": user.email,
        "account": account.pk,
        "full_name": "",
        "is_active": "on",
        "date_joined_0": "9999-12-31",
        "date_joined_1": "23:59:59",
    }
    url = reverse("admin:gateway_user_change", args=[user.pk])
    response = client.post(url, fields)
    assert response.status_code == 200
    assert "Time is out of range: in UTC it must fall between" in response.content.decode()
    user.refresh_from_db()
    assert user.date_joined.year < 9999
    assert client.get(reverse("admin:gateway_user_changelist")).status_code == 200


def test_a_contacts_opt_out_time_is_not_typed_in_the_admin_but_kept_by_its_consent(superuser):
    client, account, _device = superuser
    contact = Contact.objects.create(account=account, phone="+4915700000001", name="Anna")
    form = client.get(reverse("admin:contacts_contact_change", args=[contact.pk])).content
    assert b'name="opted_out_at' not in form and b'name="opted_out"' in form


def test_a_newsletter_send_time_too_far_ahead_is_a_form_error(superuser):
    client, account, device = superuser
    tag = Tag.objects.create(account=account, title="t")
    fields = {
        "account": account.pk,
        "title": "T",
        "device": device.pk,
        "sim": 0,
        "body": "b",
        "tags": [tag.pk],
        "send_at_0": "2099-01-01",
        "send_at_1": "12:00:00",
    }
    before = Newsletter.objects.count()
    response = client.post(reverse("admin:contacts_newsletter_add"), fields)
    assert response.status_code == 200
    assert "Send time is too far ahead: at most 10 years from now" in response.content.decode()
    assert Newsletter.objects.count() == before
    accepted = client.post(
        reverse("admin:contacts_newsletter_add"), {**fields, "send_at_0": "2030-01-01"}
    )
    assert accepted.status_code == 302 and Newsletter.objects.count() == before + 1
    assert client.get(reverse("admin:contacts_newsletter_changelist")).status_code == 200
