from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from devices import services
from devices.models import Device
from messaging.models import Message


@pytest.fixture
def paired(make_account, make_device):
    """A device of a fresh account, paired (it has a token), with SIM slots 0 and 1."""

    def make(**overrides: Any):
        account = overrides.pop("account", None) or make_account()
        overrides.setdefault("imei", f"35824005{Device.objects.count():07d}")
        device = make_device(account, slots=overrides.pop("slots", (0, 1)), **overrides)
        paired_device, token = services.pair_with_login(
            account, services.DeviceDetails(imei=device.imei)
        )
        assert paired_device.pk == device.pk
        return paired_device, token

    return make


def age(message: Message, **delta: float) -> None:
    """Move a message's send time into the past (test set-up)."""
    Message.objects.filter(pk=message.pk).update(send_at=timezone.now() - timedelta(**delta))
