"""The lifecycle table and its only writer, messaging.lifecycle.move."""

import itertools

import pytest

from messaging import lifecycle
from messaging.models import FINAL, LEGAL_SOURCES, Message, MessageStatusChange, Status

ALL_PAIRS = [(a, b) for a, b in itertools.product(Status, Status) if a != b]


def _force_status(message: Message, status: Status) -> None:
    # Test set-up only: puts a message into a state as if earlier moves had happened.
    Message.objects.filter(pk=message.pk).update(status=status)


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: s.name)
def test_every_move_is_legal_exactly_when_the_table_says(make_message, account, source, target):
    message = make_message(account)
    _force_status(message, source)
    result = lifecycle.move([message.pk], target, source="test")
    message.refresh_from_db()
    history = list(MessageStatusChange.objects.filter(message=message))
    if source in LEGAL_SOURCES.get(target, ()):
        assert result.moved == [message.pk]
        assert message.status == target
        assert [(h.from_status, h.to_status) for h in history] == [(source, target)]
    else:
        assert result.rejected == [message.pk]
        assert message.status == source
        assert history == []


@pytest.mark.parametrize(
    "target", [s for s in Status if LEGAL_SOURCES.get(s)], ids=lambda s: s.name
)
def test_a_repeated_move_changes_nothing(make_message, account, target):
    message = make_message(account)
    _force_status(message, next(iter(LEGAL_SOURCES.get(target, ()))))
    lifecycle.move([message.pk], target)
    before = Message.objects.values().get(pk=message.pk)
    again = lifecycle.move([message.pk], target)
    assert again.unchanged == [message.pk] and again.moved == []
    assert Message.objects.values().get(pk=message.pk) == before
    assert MessageStatusChange.objects.filter(message=message).count() == 1


def test_a_late_sent_after_delivered_changes_nothing(make_message, account):
    message = make_message(account)
    _force_status(message, Status.TAKEN)
    lifecycle.move([message.pk], Status.DELIVERED)
    result = lifecycle.move([message.pk], Status.SENT)
    assert result.rejected == [message.pk]
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert message.sent_at is not None and message.delivered_at is not None


def test_final_statuses_have_no_way_out():
    assert {Status.DELIVERED, Status.EXPIRED, Status.INCOMING, Status.NULL_PDU} <= FINAL
    # a phone's late word can still replace our guess or a late cancellation
    assert Status.UNKNOWN not in FINAL and Status.CANCELLED not in FINAL
    for final in FINAL:
        assert not any(final in sources for sources in LEGAL_SOURCES.values())


def test_a_batch_moves_what_it_can_and_reports_the_rest(make_message, account, make_account):
    taken, delivered, foreign = (
        make_message(account),
        make_message(account),
        make_message(make_account()),
    )
    _force_status(taken, Status.TAKEN)
    _force_status(delivered, Status.DELIVERED)
    result = lifecycle.move(
        [taken.pk, delivered.pk, foreign.pk, 987654321], Status.SENT, account=account
    )
    assert result.moved == [taken.pk]
    assert sorted(result.rejected) == sorted([delivered.pk, foreign.pk, 987654321])
    foreign.refresh_from_db()
    assert foreign.status == Status.NEW


def test_failure_detail_and_times_are_recorded(make_message, account):
    message = make_message(account)
    _force_status(message, Status.TAKEN)
    lifecycle.move(
        [message.pk], Status.NO_SERVICE, detail="RESULT_ERROR_NO_SERVICE", source="phone"
    )
    message.refresh_from_db()
    assert message.error_detail == "RESULT_ERROR_NO_SERVICE"
    change = message.history.get()
    assert change.source == "phone" and change.detail == "RESULT_ERROR_NO_SERVICE"


def test_only_from_narrows_the_legal_sources(make_message, account):
    message = make_message(account)
    _force_status(message, Status.TAKEN)
    assert lifecycle.move([message.pk], Status.CANCELLED, only_from=[Status.NEW]).rejected == [
        message.pk
    ]


def test_every_code_has_a_label_and_a_short_title():
    for status in Status:
        assert status.label and status.short_title
