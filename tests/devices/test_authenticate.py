"""authenticate_device reads the device row with plain SQL and builds the model as the ORM
does: every field must come back exactly as Device.objects.get gives it, on SQLite and on
PostgreSQL (times with their zone, booleans, JSON)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from devices import services
from devices.models import Device


@pytest.mark.django_db
def test_the_device_comes_back_field_for_field_as_the_orm_reads_it(make_account):
    account = make_account()
    device, token = services.register_app(account, "Pixel 8", ())
    Device.objects.filter(pk=device.pk).update(
        last_seen_at=timezone.now(),
        battery_percent=57,
        charging=True,
        health={"checks": {"battery:level": {"status": "pass", "observedValue": 57}}},
    )
    found = services.authenticate_device(token, Device.Protocol.SMSGATE)
    expected = Device.objects.get(pk=device.pk)
    assert found is not None and found.pk == device.pk and not found._state.adding
    for field in Device._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(expected, field.attname), field.name
    assert found.last_seen_at.tzinfo is not None
    assert found.account == account  # loaded when used


@pytest.mark.django_db
def test_a_token_works_only_for_its_protocol_and_only_while_it_is_valid(make_account):
    device, token = services.register_app(make_account(), "Pixel 8", ())
    assert services.authenticate_device(token, Device.Protocol.AGENT) is None
    assert services.authenticate_device(token + "x", Device.Protocol.SMSGATE) is None
    assert services.authenticate_device("not-a-device-token", Device.Protocol.SMSGATE) is None
    Device.objects.filter(pk=device.pk).update(token_hash="0" * 64)
    assert services.authenticate_device(token, Device.Protocol.SMSGATE) is None
