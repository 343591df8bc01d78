from datetime import timedelta

from django.utils import timezone

from messaging import lifecycle, services, tasks
from messaging.models import Message, MessageStatusChange, Status


def test_queued_messages_past_the_expiry_end_expired(make_message, account, settings):
    settings.MESSAGE_EXPIRY_HOURS = 24
    stale, fresh = make_message(account), make_message(account)
    Message.objects.filter(pk=stale.pk).update(send_at=timezone.now() - timedelta(hours=25))
    assert services.expire_stale() == 1
    assert Message.objects.get(pk=stale.pk).status == Status.EXPIRED
    assert Message.objects.get(pk=fresh.pk).status == Status.NEW
    assert services.expire_stale() == 0
    settings.MESSAGE_EXPIRY_HOURS = 0
    Message.objects.filter(pk=fresh.pk).update(send_at=timezone.now() - timedelta(days=400))
    assert services.expire_stale() == 0


def test_a_message_past_its_own_validity_expires_whatever_the_expiry_setting(
    make_message, account, settings
):
    settings.MESSAGE_EXPIRY_HOURS = 0
    now = timezone.now()
    past, future, plain = make_message(account), make_message(account), make_message(account)
    Message.objects.filter(pk=past.pk).update(valid_until=now - timedelta(seconds=1))
    Message.objects.filter(pk=future.pk).update(valid_until=now + timedelta(hours=1))
    assert services.expire_stale() == 1
    assert Message.objects.get(pk=past.pk).status == Status.EXPIRED
    assert {m.status for m in Message.objects.filter(pk__in=[future.pk, plain.pk])} == {Status.NEW}
    assert services.expire_stale() == 0


def test_old_history_is_pruned_and_messages_kept(make_message, account, settings):
    settings.HISTORY_RETENTION_DAYS = 30
    message = make_message(account)
    lifecycle.move([message.pk], Status.CANCELLED)
    MessageStatusChange.objects.update(changed_at=timezone.now() - timedelta(days=31))
    recent = make_message(account)
    lifecycle.move([recent.pk], Status.CANCELLED)
    tasks.housekeeping()
    assert list(MessageStatusChange.objects.values_list("message_id", flat=True)) == [recent.pk]
    assert Message.objects.count() == 2
