"""Newsletters: set-based fan-out, idempotency, states, progress counters, opt-out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from contacts import services
from contacts.models import Contact, ContactEvent, Newsletter, Tag
from devices import handoff
from devices import services as devices
from messaging import lifecycle
from messaging.models import Message, Status
from messaging.services import IncomingSms


@pytest.fixture
def audience(make_account, make_device):
    account = make_account()
    device = make_device(account, slots=(0, 1))
    vip, news = (
        Tag.objects.create(account=account, title="vip"),
        Tag.objects.create(account=account, title="news"),
    )
    both = services.save_contact(account, "+4915700000001", name="Both", tag_ids=[vip.pk, news.pk])
    services.save_contact(account, "+4915700000002", tag_ids=[vip.pk])
    services.save_contact(account, "+4915700000003", tag_ids=[news.pk])
    services.save_contact(account, "+4915700000004")  # in no tag
    gone = services.save_contact(account, "+4915700000005", tag_ids=[vip.pk])
    Contact.objects.filter(pk=gone.pk).update(opted_out=True)
    return account, device, [vip.pk, news.pk], both


def newsletter(account, device, tags, **fields):
    return services.create_newsletter(
        account,
        title="Sale",
        device_id=device.pk,
        sim=fields.pop("sim", 0),
        body="50% off today",
        tag_ids=tags,
        **fields,
    )


def test_fan_out_writes_one_sms_per_distinct_reachable_contact(audience):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags)
    assert services.fan_out(sale.pk) == 3
    phones = sorted(Message.objects.filter(newsletter=sale).values_list("phone", flat=True))
    assert phones == ["+4915700000001", "+4915700000002", "+4915700000003"]
    sale.refresh_from_db()
    assert (sale.state, sale.queued_count) == (Newsletter.State.SENDING, 3)
    message = Message.objects.filter(newsletter=sale).first()
    assert (message.device_id, message.sim, message.body, message.status) == (
        device.pk,
        0,
        "50% off today",
        Status.NEW,
    )


def test_fan_out_is_idempotent_and_all_or_nothing(audience):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.fan_out(sale.pk)
        raise RuntimeError("worker killed")
    assert Message.objects.filter(newsletter=sale).count() == 0
    assert Newsletter.objects.get(pk=sale.pk).state == Newsletter.State.SCHEDULED
    assert services.fan_out(sale.pk) == 3
    assert services.fan_out(sale.pk) == 0
    # even forced back to scheduled, the unique (newsletter, phone) drops duplicates
    Newsletter.objects.filter(pk=sale.pk).update(state=Newsletter.State.SCHEDULED)
    assert services.fan_out(sale.pk) == 0
    assert Message.objects.filter(newsletter=sale).count() == 3


def test_a_newsletter_waits_for_its_time(audience):
    account, device, tags, _ = audience
    later = newsletter(account, device, tags, send_at=timezone.now() + timedelta(hours=1))
    assert services.fan_out(later.pk) == 0 and services.due_newsletters() == []
    assert services.fan_out(later.pk, now=timezone.now() + timedelta(hours=2)) == 3


def test_progress_counters_follow_every_move(audience):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags)
    services.fan_out(sale.pk)
    ids = list(Message.objects.filter(newsletter=sale).order_by("id").values_list("id", flat=True))
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, ids, lease)
    handoff.report(
        device,
        [
            lifecycle.Outcome(ids[0], Status.SENT),
            lifecycle.Outcome(ids[0], Status.DELIVERED),
            lifecycle.Outcome(ids[1], Status.SENT),
            lifecycle.Outcome(ids[2], Status.RADIO_OFF),
        ],
    )
    sale.refresh_from_db()
    assert (sale.queued_count, sale.sent_count, sale.delivered_count, sale.failed_count) == (
        3,
        2,
        1,
        1,
    )
    lifecycle.move([ids[1]], Status.NOT_DELIVERED)
    sale.refresh_from_db()
    assert (sale.sent_count, sale.delivered_count, sale.failed_count) == (2, 1, 2)
    assert services.finish_newsletters() == 1
    assert Newsletter.objects.get(pk=sale.pk).state == Newsletter.State.DONE


def test_a_paused_newsletter_is_not_handed_out_until_resumed(audience):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags)
    services.fan_out(sale.pk)
    services.pause_newsletter(account, sale.pk)
    services.pause_newsletter(account, sale.pk)  # harmless
    assert handoff.poll(device).messages == []
    services.resume_newsletter(account, sale.pk)
    assert Newsletter.objects.get(pk=sale.pk).state == Newsletter.State.SENDING
    assert len(handoff.poll(device).messages) == 3


def test_pausing_before_the_fan_out_resumes_to_scheduled(audience):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags, send_at=timezone.now() + timedelta(hours=1))
    services.pause_newsletter(account, sale.pk)
    assert services.fan_out(sale.pk, now=timezone.now() + timedelta(hours=2)) == 0
    services.resume_newsletter(account, sale.pk)
    assert Newsletter.objects.get(pk=sale.pk).state == Newsletter.State.SCHEDULED


def test_cancel_stops_what_no_phone_confirmed(audience):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags)
    services.fan_out(sale.pk)
    polled = handoff.poll(device)
    first = polled.messages[0].id
    handoff.confirm(device, [first], polled.lease_id)
    assert services.cancel_newsletter(account, sale.pk) == 2
    assert services.cancel_newsletter(account, sale.pk) == 0
    assert Message.objects.get(pk=first).status == Status.TAKEN
    assert Message.objects.filter(newsletter=sale, status=Status.CANCELLED).count() == 2
    with pytest.raises(services.IllegalNewsletterChange):
        services.resume_newsletter(account, sale.pk)


def test_another_accounts_newsletter_cannot_be_touched(audience, make_account):
    account, device, tags, _ = audience
    sale = newsletter(account, device, tags)
    with pytest.raises(services.IllegalNewsletterChange):
        services.pause_newsletter(make_account(), sale.pk)
    assert Newsletter.objects.get(pk=sale.pk).state == Newsletter.State.SCHEDULED


def test_stop_from_a_contact_excludes_it_from_the_next_newsletter(audience, make_device):
    account, device, tags, both = audience
    from devices.models import Device

    Device.objects.filter(pk=device.pk).update(imei="358240051111110")
    device, _ = devices.pair_with_login(account, devices.DeviceDetails(imei="358240051111110"))
    (stored_id,) = handoff.receive(
        device, [IncomingSms("in-1", "+49 157 00000001", "Stop please")]
    ).values()
    both.refresh_from_db()
    assert both.opted_out
    event = ContactEvent.objects.get(contact=both)
    assert (event.kind, event.message_id, event.reason) == ("opted_out", stored_id, "texted 'STOP'")
    # the same upload again changes nothing more
    handoff.receive(device, [IncomingSms("in-1", "+49 157 00000001", "Stop please")])
    assert ContactEvent.objects.filter(contact=both).count() == 1
    sale = newsletter(account, device, tags)
    services.fan_out(sale.pk)
    assert "+4915700000001" not in Message.objects.filter(newsletter=sale).values_list(
        "phone", flat=True
    )
    handoff.receive(device, [IncomingSms("in-2", "+4915700000001", "start")])
    both.refresh_from_db()
    assert not both.opted_out and both.events.count() == 2


def test_savepaket_due_now_enqueues_its_fan_out_after_commit(
    audience, django_capture_on_commit_callbacks
):
    account, device, tags, _ = audience
    with django_capture_on_commit_callbacks() as callbacks:
        newsletter(account, device, tags)
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks() as later:
        newsletter(account, device, tags, send_at=timezone.now() + timedelta(hours=1))
    assert later == []
