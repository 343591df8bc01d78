"""One account's objects are invisible to another through the service layer."""

import pytest

from devices.models import Device
from gateway.models import ApiToken
from gateway.services import create_api_token
from messaging import lifecycle, services
from messaging.models import Message, Status


@pytest.fixture
def two_accounts(make_account):
    return make_account(name="alice"), make_account(name="bob")


def test_a_foreign_message_id_is_not_found(two_accounts, make_message):
    alice, bob = two_accounts
    bobs = make_message(bob)
    with pytest.raises(services.MessageNotFound):
        services.get_message(alice, bobs.pk)
    assert services.get_message(bob, bobs.pk).pk == bobs.pk


def test_a_foreign_message_cannot_be_moved(two_accounts, make_message):
    alice, bob = two_accounts
    bobs = make_message(bob)
    result = lifecycle.move([bobs.pk], Status.CANCELLED, account=alice)
    assert result.rejected == [bobs.pk]
    assert Message.objects.get(pk=bobs.pk).status == Status.NEW


def test_a_message_cannot_be_created_on_a_foreign_device(two_accounts, make_device):
    alice, bob = two_accounts
    foreign = services.OutgoingSms(make_device(bob).pk, "+4915752982212", "x")
    with pytest.raises(services.InvalidBatch, match="Device not found"):
        services.submit(alice, [foreign])
    assert Message.objects.count() == 0


def test_tenant_querysets_see_only_their_account(two_accounts, make_device):
    alice, bob = two_accounts
    make_device(alice)
    make_device(bob)
    create_api_token(bob, "bob's")
    assert Device.objects.for_account(alice).count() == 1
    assert not ApiToken.objects.for_account(alice).exists()
    assert {d.account_id for d in Device.objects.for_account(bob.pk)} == {bob.pk}
