"""The admin reads as this product's console: our name, no link to a site that does not
exist, and none of Django's internals (permission groups, service heartbeats) on the index."""

from __future__ import annotations

import re

import pytest
from django.test import Client


@pytest.fixture(params=["superuser", "owner"])
def console(request, make_user):
    extra = {"is_staff": True, "is_superuser": request.param == "superuser"}
    user = make_user(f"{request.param}@example.com", "pw-long-enough", **extra)
    client = Client()
    client.force_login(user)
    return client


def test_every_page_carries_our_name_and_no_view_site_link(console):
    for path in ("/admin/", "/admin/messaging/message/", "/admin/devices/device/"):
        page = console.get(path).content.decode()
        title = re.search(r"<title>(.*?)</title>", page, re.S)
        assert title and title.group(1).strip().endswith("SMS gateway"), (path, title)
        assert 'id="site-name"' in page and ">SMS gateway</a>" in page, path
        assert "View site" not in page, path


def test_the_index_shows_no_django_internals(console):
    page = console.get("/admin/").content.decode()
    assert "Operator's console" in page or "Operator&#x27;s console" in page
    assert ">Groups<" not in page
    assert "Service heartbeats" not in page
    assert ">Messages<" in page  # the index still lists what operators work with


def test_browsers_get_our_icon_not_a_404(console):
    from django.contrib.staticfiles import finders

    page = console.get("/admin/").content.decode()
    icon = re.search(r'<link rel="icon" href="([^"]+)"', page)
    assert icon and icon.group(1).endswith("gateway/favicon.svg")
    answer = Client().get("/favicon.ico")
    assert answer.status_code == 301 and answer["Location"] == icon.group(1)
    assert finders.find("gateway/favicon.svg")


def test_sims_are_counted_from_one_on_every_admin_page(make_user, paired):
    """Forms, filters, the message list and detail, the newsletter form and a sent
    newsletter all say SIM 1 / SIM 2 for slots 0 / 1 (the wire formats keep theirs)."""
    from django.urls import reverse

    from contacts.models import Newsletter
    from messaging import services as messaging
    from messaging.models import Message

    user = make_user("sims@example.com", "pw-long-enough", is_staff=True)
    device, _ = paired(account=user.account, title="Pixel")
    client = Client()
    client.force_login(user)
    (second,) = messaging.submit(
        user.account, [messaging.OutgoingSms(device.pk, "+4915700000001", "hi", sim=1)]
    )
    pages = {
        "list": client.get(reverse("admin:messaging_message_changelist")).content.decode(),
        "detail": client.get(
            reverse("admin:messaging_message_change", args=[second])
        ).content.decode(),
        "send": client.get(reverse("admin:messaging_message_send")).content.decode(),
        "newsletter form": client.get(reverse("admin:contacts_newsletter_add")).content.decode(),
    }
    for name, page in pages.items():
        assert "SIM 2" in page, name
    assert re.search(r'<td class="field-sim_card">SIM 2</td>', pages["list"])
    assert re.search(r'<select name="sim"[^>]*>', pages["newsletter form"])  # not a free integer
    newsletter = Newsletter.objects.create(
        account=user.account, title="Sent", device=device, sim=1, body="x",
        state=Newsletter.State.DONE,
    )  # fmt: skip
    sent = client.get(reverse("admin:contacts_newsletter_change", args=[newsletter.pk]))
    assert re.search(r"SIM 2", sent.content.decode())
    assert Message.objects.get(pk=second).sim == 1


def test_labels_carry_units_and_proper_casing(make_user, paired):
    from django.urls import reverse

    user = make_user("labels@example.com", "pw-long-enough", is_staff=True, is_superuser=True)
    device, _ = paired(account=user.account, title="Pixel")
    client = Client()
    client.force_login(user)
    device_page = client.get(
        reverse("admin:devices_device_change", args=[device.pk])
    ).content.decode()
    for label in ("Delay between SMS (seconds)", "Delay between polls (seconds)", "IMEI"):
        assert f"{label}:" in device_page, label
    assert "Imei" not in device_page
    assert "API tokens" in client.get("/admin/").content.decode()
    endpoint_form = client.get(reverse("admin:messaging_webhookendpoint_add")).content.decode()
    assert ">URL:<" in endpoint_form and ">Url:<" not in endpoint_form
