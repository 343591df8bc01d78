from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from messaging.models import Message


def age(message: Message, **delta: float) -> None:
    """Move a message's send time into the past (test set-up)."""
    Message.objects.filter(pk=message.pk).update(send_at=timezone.now() - timedelta(**delta))
