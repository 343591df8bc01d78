"""What an operator does in the admin: send, cancel, resend, move, import, tokens, dashboard."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts import services as contacts_services
from contacts.models import Contact, Newsletter, Tag
from devices import handoff
from devices.models import Device
from gateway import services as accounts
from gateway.admin_base import EstimatedCountPaginator
from gateway.models import ApiToken
from messaging import services as messaging
from messaging.lifecycle import Outcome
from messaging.models import Message, Status


@pytest.fixture
def operator(make_user, paired):
    user = make_user("ops@example.com", "pw-long-enough", is_staff=True)
    device, _ = paired(account=user.account, title="Pixel")
    client = Client()
    client.force_login(user)
    return client, user.account, device


def _action(client, model: str, action: str, ids: list[int], **extra):
    return client.post(
        reverse(f"admin:{model}_changelist"), {"action": action, "_selected_action": ids, **extra}
    )


def test_send_sms_from_the_admin(operator):
    client, account, device = operator
    response = client.post(
        reverse("admin:messaging_message_send"),
        {
            "device": device.pk,
            "sim": 1,
            "to": "+49 157 52982212",
            "body": "Hello from the admin",
            "urgent": "on",
        },
    )
    message = Message.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{message.pk}/change/")
    assert (message.phone, message.sim, message.urgent, message.account) == (
        "+4915752982212",
        1,
        True,
        account,
    )
    bad = client.post(
        reverse("admin:messaging_message_send"),
        {"device": device.pk, "sim": 0, "to": "CALL ME", "body": "x"},
    )
    assert "characters other than digits" in bad.content.decode()


def test_send_sms_takes_a_time_a_customer_id_and_preselects_the_only_phone(operator):
    client, _, device = operator
    page = client.get(reverse("admin:messaging_message_send")).content.decode()
    assert f'<option value="{device.pk}" selected>' in page  # the account's only phone
    assert "sms-alphabet" in page and "sms-counter.js" in page
    response = client.post(
        reverse("admin:messaging_message_send"),
        {
            "device": device.pk,
            "sim": 0,
            "to": "+4915752982212",
            "body": "Later",
            "send_at_0": "2031-01-01",
            "send_at_1": "10:00:00",
            "customer_id": "4711",
        },
    )
    assert response.status_code == 302
    message = Message.objects.get(body="Later")
    assert message.customer_id == 4711 and message.send_at.year == 2031
    bad = client.post(
        reverse("admin:messaging_message_send"),
        {"device": device.pk, "sim": 0, "to": "+4915752982212", "body": "x",
         "customer_id": str(2**63)},
    ).content.decode()  # fmt: skip
    assert "Ensure this value is less than or equal to" in bad


def test_the_message_list_finds_numbers_as_typed_and_words_and_shows_seconds(operator):
    client, account, device = operator
    messaging.submit(
        account,
        [
            messaging.OutgoingSms(device.pk, "+4915752982212", "Your code is 4711"),
            messaging.OutgoingSms(device.pk, "+4917612345678", "Meeting moved to Friday"),
            messaging.OutgoingSms(device.pk, "+4915700000001", "x", customer_id=98765),
        ],
    )

    def found(term: str) -> set[str]:
        page = client.get(reverse("admin:messaging_message_changelist"), {"q": term})
        assert page.status_code == 200
        return {m.phone for m in page.context["cl"].result_list}

    for typed in ("+49 157 52982212", "0157 5298 2212", "004915752982212", "52982", "2212"):
        assert found(typed) == {"+4915752982212"}, typed
    assert found("friday") == {"+4917612345678"}  # words of the text, any case
    assert found("98765") == {"+4915700000001"}  # a customer id
    assert found("nothing like it") == set()
    listing = client.get(reverse("admin:messaging_message_changelist")).content.decode()
    assert "Your code is 4711" in listing  # the text column
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", listing)  # seconds, zone


def test_an_incoming_sms_page_shows_no_outgoing_fields(operator):
    client, _, device = operator
    stored, _ = messaging.store_incoming(
        device, [messaging.IncomingSms("inbox-1", "+4915752982212", "STOP")]
    )
    page = client.get(
        reverse("admin:messaging_message_change", args=[stored["inbox-1"]])
    ).content.decode()
    assert "STOP" in page and "Outcome deadline" not in page and "Urgent" not in page


def test_message_actions_go_through_the_services(operator, paired):
    client, account, device = operator
    other, _ = paired(account=account, title="Spare")
    ids = messaging.submit(
        account, [messaging.OutgoingSms(device.pk, "1234", f"m{i}") for i in range(4)]
    )
    _action(client, "messaging_message", "cancel", [ids[0]])
    _action(client, "messaging_message", "mark_failed", [ids[1]])
    _action(client, "messaging_message", "resend", [ids[0]])
    form = _action(client, "messaging_message", "move", [ids[2]])
    assert form.status_code == 200 and "Spare" in form.content.decode()
    _action(client, "messaging_message", "move", [ids[2]], apply="1", device=other.pk, sim=0)
    statuses = dict(Message.objects.values_list("id", "status"))
    assert statuses[ids[0]] == Status.CANCELLED and statuses[ids[1]] == Status.GENERIC_FAILURE
    assert Message.objects.get(pk=ids[2]).device_id == other.pk
    copy = Message.objects.exclude(id__in=ids).get()
    assert (copy.body, copy.status) == ("m0", Status.NEW)
    page = client.get(reverse("admin:messaging_message_change", args=[ids[0]])).content.decode()
    assert "Cancelled" in page  # the status timeline


def test_newsletter_actions_and_progress(operator):
    client, account, device = operator
    tag = Tag.objects.create(account=account, title="all")
    Contact.objects.create(account=account, phone="+4915700000001").tags.add(tag)
    response = client.post(
        reverse("admin:contacts_newsletter_add"),
        {
            "title": "Sale",
            "device": device.pk,
            "sim": 0,
            "body": "50% off",
            "tags": [tag.pk],
            "send_at_0": "2031-01-01",
            "send_at_1": "10:00:00",
        },
    )
    newsletter = Newsletter.objects.get()
    assert response.status_code == 302 and newsletter.account == account
    assert (
        "1 contacts"
        in client.get(
            reverse("admin:contacts_newsletter_change", args=[newsletter.pk])
        ).content.decode()
    )
    _action(client, "contacts_newsletter", "pause", [newsletter.pk])
    assert Newsletter.objects.get().state == "paused"
    _action(client, "contacts_newsletter", "resume", [newsletter.pk])
    _action(client, "contacts_newsletter", "cancel", [newsletter.pk])
    assert Newsletter.objects.get().state == "cancelled"
    assert (
        "progress-bar"
        in client.get(reverse("admin:contacts_newsletter_changelist")).content.decode()
    )


def test_csv_import_normalizes_merges_and_reports_bad_rows(operator):
    client, account, _ = operator
    csv_text = "phone,name,tags\n+49 157 00000001,Anna,vip;news\n+4915700000001,Anna B.,old\nnot a phone,X,\n,Empty,\n"
    response = client.post(
        reverse("admin:contacts_contact_import"),
        {"file": SimpleUploadedFile("c.csv", csv_text.encode(), content_type="text/csv")},
    )
    text = response.content.decode()
    assert "1 created, 1 updated." in text
    assert "<td>4</td>" in text and "<td>5</td>" in text  # the two bad lines, by number
    # The repeated number is reported, with the line that had it first.
    assert "+4915700000001 is also on line 2" in text and "<td>3</td>" in text
    contact = Contact.objects.get(account=account)
    assert contact.name == "Anna B." and sorted(contact.tags.values_list("title", flat=True)) == [
        "news",
        "old",
        "vip",
    ]
    export = _action(client, "contacts_contact", "export_csv", [contact.pk])
    assert export["Content-Type"].startswith("text/csv") and b"+4915700000001" in export.content


def test_a_token_created_in_the_admin_is_shown_once(operator):
    client, account, _ = operator
    page = client.post(reverse("admin:gateway_apitoken_add"), {"name": "shop"}).content.decode()
    secret = page.split('class="token-secret"')[1].split(">")[1].split("<")[0]
    token = ApiToken.objects.get(name="shop")
    assert token.account == account and accounts.authenticate_token(secret) == token
    detail = client.get(reverse("admin:gateway_apitoken_change", args=[token.pk])).content.decode()
    assert secret not in detail
    _action(client, "gateway_apitoken", "revoke", [token.pk])
    assert accounts.authenticate_token(secret) is None


def test_device_list_and_dashboard(operator):
    client, account, device = operator
    messaging.submit(account, [messaging.OutgoingSms(device.pk, "1234", "x")] * 3)
    devices_page = client.get(reverse("admin:devices_device_changelist")).content.decode()
    assert "online" in devices_page and "3 / 0" in devices_page
    device.sims.filter(slot=1).update(number="+4915752982212", carrier_name="Telekom")
    dashboard = client.get(reverse("admin-dashboard")).content.decode()
    assert "Pixel" in dashboard and "<svg" in dashboard
    # SIMs as people count them, with what the phone reported of the card.
    assert "<td>SIM 1</td>" in dashboard and "SIM 2 (+4915752982212, Telekom)" in dashboard
    assert reverse("admin-dashboard") in client.get(reverse("admin:index")).content.decode()
    adding = client.get(reverse("admin:devices_device_add")).content.decode()
    assert "Create pairing codes" in adding and Device.objects.count() == 1
    created = client.post(reverse("admin:devices_device_add")).content.decode()
    assert "Pairing code" in created and Device.objects.count() == 1


def test_the_dashboard_shows_each_sim_its_queue_and_the_phones_health(operator, paired):
    client, account, device = operator
    from devices.models import SimSlot

    SimSlot.objects.get_or_create(device=device, slot=1)
    Device.objects.filter(pk=device.pk).update(battery_percent=77, charging=True)
    messaging.submit(account, [messaging.OutgoingSms(device.pk, "+4915752982212", "w", 1)] * 2)
    (sent,) = messaging.submit(account, [messaging.OutgoingSms(device.pk, "+4915752982213", "s")])
    lease = handoff.poll(device, [0]).lease_id
    handoff.confirm(device, [sent], lease)
    handoff.report(device, [Outcome(sent, Status.SENT)])
    page = client.get(reverse("admin-dashboard")).content.decode()
    assert "77 %, charging" in page and "SIM 1" in page and "SIM 2" in page
    assert f'?device={device.pk}&amp;sim=1&amp;status__exact=1">2</a>' in page  # SIM 2 waits
    assert "<td>1 / 0 / 0</td>" in page  # SIM 1 sent one today
    # More phones cost no more queries.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        client.get(reverse("admin-dashboard"))
    for n in range(5):
        paired(account=account, title=f"Spare {n}")
    with CaptureQueriesContext(connection) as six:
        assert client.get(reverse("admin-dashboard")).status_code == 200
    assert len(six) == len(one)


def test_large_lists_use_the_planner_estimate_on_postgres(operator, db_is_postgres):
    _, account, device = operator
    messaging.submit(
        account, [messaging.OutgoingSms(device.pk, "1234", "x")] * 20, return_ids=False
    )
    paginator = EstimatedCountPaginator(Message.objects.all(), 10)
    assert paginator.count == 20  # small results are counted exactly


def test_a_superuser_acts_on_several_accounts_messages_at_once(make_user, paired):
    root = make_user("root@example.com", "pw-long-enough", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    ids = []
    for _ in range(2):
        device, _ = paired()
        ids += messaging.submit(device.account, [messaging.OutgoingSms(device.pk, "1234", "x")])
    _action(client, "messaging_message", "cancel", ids)
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        Status.CANCELLED
    }


def test_the_newsletter_form_reports_a_wrong_sim_slot_under_sim(operator, paired):
    client, account, _ = operator
    device, _ = paired(account=account, title="One SIM", slots=(0,))
    tag = Tag.objects.create(account=account, title="all")
    response = client.post(
        reverse("admin:contacts_newsletter_add"),
        {
            "title": "Sale",
            "device": device.pk,
            "sim": 1,
            "body": "x" * 2000,
            "tags": [tag.pk],
            "send_at_0": "2031-01-01",
            "send_at_1": "10:00:00",
        },
    )
    assert response.status_code == 200 and not Newsletter.objects.exists()
    errors = response.context["adminform"].form.errors
    assert "This device has no SIM 2" in str(errors["sim"]) and "1600" in str(errors["body"])


def test_the_send_and_move_forms_name_a_missing_sim_as_the_admin_counts(operator, paired):
    client, account, device = operator
    single, _ = paired(account=account, title="One SIM", slots=(0,))
    sent = client.post(
        reverse("admin:messaging_message_send"),
        {"device": single.pk, "sim": 1, "to": "+4915752982212", "body": "Hi"},
    )
    assert sent.status_code == 200 and not Message.objects.exists()
    assert sent.context["form"].errors["sim"] == ["This device has no SIM 2."]
    (message_id,) = messaging.submit(account, [messaging.OutgoingSms(device.pk, "1234", "x")])
    moved = _action(
        client, "messaging_message", "move", [message_id], apply="1", device=single.pk, sim=1
    )
    assert moved.status_code == 200
    assert moved.context["form"].errors["sim"] == ["This device has no SIM 2."]
    assert Message.objects.get(pk=message_id).device_id == device.pk


def test_the_webhook_event_page_shows_its_delivery_log_as_a_table(operator):
    from messaging.models import WebhookEndpoint, WebhookEvent

    client, account, _ = operator
    endpoint = WebhookEndpoint.objects.create(
        account=account, kind="status", url="https://hooks.example.com/x"
    )
    event = WebhookEvent.objects.create(
        endpoint=endpoint,
        kind="sms.status",
        body="{}",
        log=[{"at": "2026-12-01T10:00:00Z", "status": 500, "error": "<b>down</b>", "ms": 12}],
    )
    page = client.get(reverse("admin:messaging_webhookevent_change", args=[event.pk]))
    html = page.content.decode()
    assert "<td>500</td>" in html and "&lt;tr&gt;" not in html
    assert "&lt;b&gt;down&lt;/b&gt;" in html  # what the receiver said stays text


def test_device_settings_change_through_the_service_and_the_phones_limit_is_not_editable(
    operator,
):
    client, _, device = operator
    url = reverse("admin:devices_device_change", args=[device.pk])
    form = client.get(url).content.decode()
    assert 'name="segments_per_minute"' not in form and 'name="delay_between_sms"' in form
    response = client.post(
        url,
        {
            "title": "Pixel 8",
            "number": "",
            "enabled": "on",
            "delay_between_sms": "5",
            "delay_between_requests": "10",
            "batch_size": "15",
            "segments_per_minute": "1000",
            "sims-TOTAL_FORMS": "0",
            "sims-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content
    device.refresh_from_db()
    assert (device.title, device.delay_between_sms) == ("Pixel 8", 5)
    assert device.segments_per_minute == 30


def test_contacts_saved_in_the_admin_are_normalized_merged_and_their_consent_logged(operator):
    client, account, _ = operator
    tag = Tag.objects.create(account=account, title="vip")
    add = reverse("admin:contacts_contact_add")
    fields = {"name": "Anna", "tags": [tag.pk], "events-TOTAL_FORMS": "0"}
    fields["events-INITIAL_FORMS"] = "0"
    assert client.post(add, {**fields, "phone": "+49 157 5298 2212"}).status_code == 302
    contact = Contact.objects.get(account=account)
    assert contact.phone == "+4915752982212"
    # the same number again is the same contact
    assert client.post(add, {**fields, "phone": "+4915752982212"}).status_code == 302
    assert Contact.objects.filter(account=account).count() == 1
    refused = client.post(add, {**fields, "phone": "not a number"})
    assert refused.status_code == 200 and "phone" in refused.context["adminform"].form.errors
    change = reverse("admin:contacts_contact_change", args=[contact.pk])
    assert (
        client.post(change, {**fields, "phone": contact.phone, "opted_out": "on"}).status_code
        == 302
    )
    contact.refresh_from_db()
    assert contact.opted_out and contact.events.get().kind == "opted_out"


def test_a_scheduled_newsletter_changed_in_the_admin_is_checked_like_a_new_one(operator):
    client, account, device = operator
    tag = Tag.objects.create(account=account, title="all")
    newsletter = contacts_services.create_newsletter(
        account,
        title="Sale",
        device_id=device.pk,
        sim=0,
        body="x",
        tag_ids=[tag.pk],
        send_at=timezone.now() + timedelta(days=3),
    )
    change = reverse("admin:contacts_newsletter_change", args=[newsletter.pk])
    fields = {
        "title": "Sale",
        "device": device.pk,
        "sim": 0,
        "body": "New text",
        "tags": [tag.pk],
        "send_at_0": "2031-01-01",
        "send_at_1": "10:00:00",
    }
    assert client.post(change, fields).status_code == 302
    newsletter.refresh_from_db()
    assert newsletter.body == "New text" and newsletter.send_at.year == 2031
    refused = client.post(change, {**fields, "sim": 7})
    assert refused.status_code == 200 and "sim" in refused.context["adminform"].form.errors
