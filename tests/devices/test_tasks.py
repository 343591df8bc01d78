from datetime import timedelta

from django.utils import timezone

from devices import handoff, tasks
from messaging import services as messaging
from messaging.models import Message, Status


def test_the_sweep_returns_expired_leases_and_settles_overdue_ones(paired):
    device, _ = paired()
    lost, silent = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "1234", "x")] * 2
    )
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, [silent], lease)
    past = timezone.now() - timedelta(seconds=1)
    Message.objects.filter(pk=lost).update(lease_expires_at=past)
    Message.objects.filter(pk=silent).update(outcome_deadline_at=past)
    tasks.sweep_leases()
    assert Message.objects.get(pk=lost).status == Status.NEW
    assert Message.objects.get(pk=silent).status == Status.UNKNOWN
    tasks.sweep_leases()  # again: nothing more happens
    assert Message.objects.get(pk=lost).status == Status.NEW
