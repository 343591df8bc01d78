"""A staff user of one account cannot reach another account's objects through the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from contacts import services as contacts
from contacts.models import Contact, ContactEvent, Newsletter, Tag
from devices import phone_settings
from devices import services as devices
from devices.models import Device, PairingCode, PhoneSettings
from gateway import services as accounts
from gateway.models import Account, ApiToken, User
from messaging import services as messaging
from messaging.models import Message, MessageStatusChange, WebhookEndpoint, WebhookEvent


def _populate(account: Account, label: str) -> dict[type, Any]:
    """One object of every kind for the account; their text carries the label."""
    user = User.objects.create_user(
        f"{label}@example.com", "pw-long-enough", account=account, is_staff=True
    )
    device, _ = devices.pair_with_login(
        account, devices.DeviceDetails(title=f"{label}-phone", imei=f"IMEI-{label}")
    )
    pairing, _ = devices.create_pairing_code(account)
    (message_id,) = messaging.submit(
        account, [messaging.OutgoingSms(device.pk, "+4915700000001", f"{label}-secret-body")]
    )
    messaging.cancel(account, [message_id])
    tag = contacts.save_tag(account, f"{label}-tag")
    contact = contacts.save_contact(
        account, "+4915711111111", name=f"{label}-contact", tag_ids=[tag.pk]
    )
    event = ContactEvent.objects.create(contact=contact, kind="opted_out", reason=f"{label}-reason")
    newsletter = Newsletter.objects.create(
        account=account, title=f"{label}-news", device=device, body="b"
    )
    endpoint = WebhookEndpoint.objects.create(
        account=account, kind="status", url=f"https://{label}.example.com/hook"
    )
    webhook_event = WebhookEvent.objects.create(
        endpoint=endpoint, kind="sms.status", body='{"x":1}'
    )
    token, _ = accounts.create_api_token(account, f"{label}-token")
    phone_settings.write(account, {"ping": {"interval_seconds": 61}}, replace=False)
    return {
        PhoneSettings: PhoneSettings.objects.get(account=account),
        Account: account,
        User: user,
        Device: device,
        PairingCode: pairing,
        Message: Message.objects.get(pk=message_id),
        MessageStatusChange: MessageStatusChange.objects.filter(message_id=message_id).first(),
        Tag: tag,
        Contact: contact,
        ContactEvent: event,
        Newsletter: newsletter,
        WebhookEndpoint: endpoint,
        WebhookEvent: webhook_event,
        ApiToken: token,
    }


@pytest.fixture
def world(make_account):
    mine = _populate(make_account(name="alice-account"), "alice")
    theirs = _populate(make_account(name="bob-account"), "bob")
    client = Client()
    client.force_login(mine[User])
    return client, mine, theirs


def _snapshot(objects: dict[type, Any]) -> list:
    return [list(type(obj).objects.filter(pk=obj.pk).values()) for obj in objects.values()]


@pytest.mark.django_db
def test_every_admin_page_of_every_model_hides_the_other_account(world):
    client, mine, theirs = world
    before = _snapshot(theirs)
    for model in admin.site._registry:
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        page = client.get(changelist)
        if page.status_code == 403:
            continue  # operator-only pages (the worker heartbeat)
        assert page.status_code == 200, changelist
        text = page.content.decode()
        assert "bob" not in text, f"{changelist} shows another account's data"
        foreign = theirs.get(model)
        if foreign is None:
            continue
        for view in ("change", "delete", "history"):
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=[foreign.pk])
            response = client.get(url)
            assert response.status_code in (302, 403, 404), url
            assert "bob" not in response.content.decode(), url
        # every action of the page, applied to the other account's object, changes nothing
        for action in admin.site._registry[model].get_actions(_request_of(client, mine)):
            response = client.post(
                changelist,
                {"action": action, "_selected_action": [foreign.pk], "post": "yes", "apply": "1"},
            )
            assert response.status_code in (200, 302), (changelist, action)
            assert "bob" not in response.content.decode(), (changelist, action)
    assert _snapshot(theirs) == before


def _request_of(client, mine):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = mine[User]
    return request


@pytest.mark.django_db
def test_filters_and_forms_offer_only_the_accounts_own_objects(world):
    client, _, _ = world
    messages = client.get(reverse("admin:messaging_message_changelist")).content.decode()
    assert "alice-phone" in messages and "bob-phone" not in messages
    send = client.get(reverse("admin:messaging_message_send")).content.decode()
    assert "alice-phone" in send and "bob-phone" not in send
    newsletter_form = client.get(reverse("admin:contacts_newsletter_add")).content.decode()
    assert "alice-tag" in newsletter_form and "bob-tag" not in newsletter_form


@pytest.mark.django_db
def test_a_staff_user_cannot_make_a_superuser_or_move_a_login(world):
    client, mine, _ = world
    form = client.get(reverse("admin:gateway_user_change", args=[mine[User].pk])).content.decode()
    assert 'name="is_superuser"' not in form and 'name="account"' not in form


@pytest.mark.django_db
def test_objects_added_by_staff_belong_to_their_account(world):
    client, mine, _ = world
    response = client.post(reverse("admin:contacts_tag_add"), {"title": "added-by-alice"})
    assert response.status_code == 302
    assert Tag.objects.get(title="added-by-alice").account == mine[Account]


@pytest.mark.django_db
def test_staff_never_see_change_or_reset_a_superuser_of_their_own_account(world, make_user):
    client, mine, _ = world
    root = make_user(
        "root@example.com", "root-password", account=mine[Account], is_staff=True, is_superuser=True
    )
    listing = client.get(reverse("admin:gateway_user_changelist")).content.decode()
    assert "root@example.com" not in listing
    for url in (
        reverse("admin:gateway_user_change", args=[root.pk]),
        reverse("admin:auth_user_password_change", args=[root.pk]),
        reverse("admin:gateway_user_delete", args=[root.pk]),
    ):
        assert client.get(url).status_code in (302, 403, 404), url
    response = client.post(
        f"/admin/gateway/user/{root.pk}/password/",
        {"password1": "taken-over-123", "password2": "taken-over-123", "usable_password": "true"},
    )
    assert response.status_code in (302, 403, 404)
    root.refresh_from_db()
    assert root.check_password("root-password")


@pytest.mark.django_db
def test_staff_cannot_grant_themselves_superuser_status_or_permissions(world):
    client, mine, _ = world
    me = mine[User]
    response = client.post(
        reverse("admin:gateway_user_change", args=[me.pk]),
        {
            "email": me.email,
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "groups": [],
            "user_permissions": ["1", "2"],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code in (200, 302)
    me.refresh_from_db()
    assert not me.is_superuser and not me.user_permissions.exists()
