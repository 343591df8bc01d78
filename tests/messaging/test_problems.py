"""Fleet problems: found by beat's sweep over what the server records, opened once, kept
fresh, resolved when gone; shown in the admin and the REST API and sent as webhook events."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from contacts import services as contacts
from contacts.models import Newsletter
from devices import handoff
from devices.models import Device
from gateway import services as accounts
from messaging import problems
from messaging import services as messaging
from messaging.lifecycle import Outcome
from messaging.models import Message, Problem, Status, WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db
Kind = Problem.Kind


def phone(make_device: Any, account: Any, **kw: Any) -> Device:
    kw.setdefault("delay_between_sms", 0)
    kw.setdefault("batch_size", 50)
    device = make_device(account, slots=(0, 1), **kw)
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())
    device.refresh_from_db()
    return device


def send(account: Any, device: Device, n: int, sim: int = 0) -> list[int]:
    return messaging.submit(
        account,
        [messaging.OutgoingSms(device.pk, f"+49157529822{i:02d}", "Hi", sim) for i in range(n)],
    )


def hand_out(device: Device, sim: int = 0) -> list[int]:
    """The phone polls and confirms what it got (our device protocol)."""
    leased = handoff.poll(device, [sim])
    ids = [m.id for m in leased.messages]
    handoff.confirm(device, ids, leased.lease_id)
    return ids


def problem_hook(account: Any) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        account=account, kind="problem", url="https://hooks.example.com/p"
    )


def events(endpoint: WebhookEndpoint) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.kind, json.loads(e.body))
        for e in WebhookEvent.objects.filter(endpoint=endpoint).order_by("id")
    ]


def test_a_silent_phone_with_waiting_sms_opens_once_and_resolves_when_it_polls(
    account, make_device
):
    device = phone(make_device, account)
    hook = problem_hook(account)
    send(account, device, 3)
    assert problems.sweep().opened == []  # it was just heard from

    later = timezone.now() + timedelta(minutes=11)
    first = problems.sweep(later)
    assert [(p.kind, p.device_id, p.count) for p in first.opened] == [
        (Kind.DEVICE_SILENT, device.pk, 3)
    ]
    assert "3 SMS waiting" in first.opened[0].detail
    send(account, device, 2)
    again = problems.sweep(later + timedelta(minutes=1))
    assert again.opened == [] and again.resolved == []
    (open_problem,) = Problem.objects.filter(resolved_at=None)
    assert open_problem.count == 5  # refreshed, not opened twice

    handoff.poll(device, now=later + timedelta(minutes=2))  # it is back
    gone = problems.sweep(later + timedelta(minutes=2))
    assert [p.pk for p in gone.resolved] == [open_problem.pk]
    assert [kind for kind, _ in events(hook)] == ["problem.opened", "problem.resolved"]
    opened, resolved = (body for _, body in events(hook))
    assert opened["kind"] == "device_silent" and opened["state"] == "open"
    assert opened["device_id"] == device.pk and opened["count"] == 3
    assert resolved["problem_id"] == opened["problem_id"] and resolved["state"] == "resolved"
    assert resolved["resolved_at"] is not None


def test_a_phone_without_waiting_work_or_disabled_is_not_a_problem(account, make_device):
    idle = phone(make_device, account)
    disabled = phone(make_device, account, enabled=False)
    send(account, disabled, 2)
    assert problems.detect(timezone.now() + timedelta(hours=1)) == []
    assert idle.pk  # silent, but nothing waits for it


def test_sms_confirmed_without_an_outcome_are_overdue_before_they_end_unknown(account, make_device):
    device = phone(make_device, account)
    send(account, device, 4)
    ids = hand_out(device)
    assert len(ids) == 4
    handoff.report(device, [Outcome(ids[0], Status.SENT)])
    now = timezone.now()
    assert [f.kind for f in problems.detect(now + timedelta(minutes=4))] == []

    found = problems.detect(now + timedelta(minutes=6))
    overdue = [f for f in found if f.kind == Kind.OUTCOME_OVERDUE]
    assert [(f.device_id, f.count) for f in overdue] == [(device.pk, 3)]
    problems.sweep(now + timedelta(minutes=6))
    problem = Problem.objects.get(kind=Kind.OUTCOME_OVERDUE)
    concerned = problems.concerned(problem, now + timedelta(minutes=6))
    assert sorted(Message.objects.filter(concerned).values_list("id", flat=True)) == ids[1:]

    handoff.report(device, [Outcome(i, Status.DELIVERED) for i in ids[1:]])
    assert problems.sweep(now + timedelta(minutes=7)).resolved == [problem]


def test_a_sim_whose_sms_fail_and_one_whose_sms_end_unknown(account, make_device):
    device = phone(make_device, account)
    send(account, device, 6, sim=0)
    failed = hand_out(device, 0)
    handoff.report(device, [Outcome(failed[0], Status.SENT)])
    handoff.report(device, [Outcome(i, Status.GENERIC_FAILURE) for i in failed[1:4]])
    found = {(f.kind, f.sim): f for f in problems.detect()}
    assert (Kind.SIM_FAILING, 0) not in found  # 4 outcomes: too few to judge
    handoff.report(device, [Outcome(failed[4], Status.NO_SERVICE)])
    found = {(f.kind, f.sim): f for f in problems.detect()}
    assert found[(Kind.SIM_FAILING, 0)].count == 4
    assert "4 of its last hour's 5 outcomes" in found[(Kind.SIM_FAILING, 0)].detail

    # SIM 2: 20 handed out, 19 delivered, one never reported (ends unknown at its deadline).
    send(account, device, 20, sim=1)
    taken = hand_out(device, 1)
    handoff.report(device, [Outcome(i, Status.DELIVERED) for i in taken[1:]])
    assert (Kind.UNKNOWN_OUTCOMES, 1) not in {(f.kind, f.sim) for f in problems.detect()}
    Message.objects.filter(pk=taken[0]).update(outcome_deadline_at=timezone.now())
    from messaging import lifecycle

    lifecycle.settle_overdue()
    assert Message.objects.get(pk=taken[0]).status == Status.UNKNOWN
    found = {(f.kind, f.sim): f for f in problems.detect()}
    assert found[(Kind.UNKNOWN_OUTCOMES, 1)].count == 1
    assert "1 of 20" in found[(Kind.UNKNOWN_OUTCOMES, 1)].detail


def test_a_webhook_endpoint_failing_three_times(account):
    endpoint = WebhookEndpoint.objects.create(
        account=account, kind="status", url="https://hooks.example.com/s"
    )
    event = WebhookEvent.objects.create(endpoint=endpoint, kind="sms.status", body="{}")
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=2, last_error="HTTP 500")
    assert problems.detect() == []
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=3)
    (finding,) = problems.detect()
    assert (finding.kind, finding.endpoint_id, finding.count) == (
        Kind.WEBHOOK_FAILING,
        endpoint.pk,
        1,
    )
    assert "HTTP 500" in finding.detail
    WebhookEvent.objects.filter(pk=event.pk).update(state="delivered")
    assert problems.detect() == []


def test_a_newsletter_none_of_whose_sms_move_is_stalled(account, make_device):
    device = phone(make_device, account)
    tag = contacts.save_tag(account, "all")
    for i in range(3):
        contacts.save_contact(account, f"+49157529823{i:02d}", tag_ids=[tag.pk])
    newsletter = contacts.create_newsletter(
        account, title="News", device_id=device.pk, sim=0, body="Hello", tag_ids=[tag.pk]
    )
    contacts.fan_out(newsletter.pk)
    newsletter.refresh_from_db()
    assert newsletter.state == Newsletter.State.SENDING and newsletter.queued_count == 3
    # Written 31 minutes ago, and nothing reached an outcome since.
    written = timezone.now() - timedelta(minutes=31)
    Newsletter.objects.filter(pk=newsletter.pk).update(fanned_out_at=written)
    (finding,) = problems.detect()
    assert (finding.kind, finding.newsletter_id, finding.count) == (
        Kind.NEWSLETTER_STALLED,
        newsletter.pk,
        3,
    )
    assert "none reached an outcome for 31 min" in finding.detail
    taken = hand_out(device)
    handoff.report(device, [Outcome(taken[0], Status.SENT)])
    assert Newsletter.objects.get(pk=newsletter.pk).progressed_at is not None
    assert problems.detect() == []  # it moved just now
    assert problems.detect(timezone.now() + timedelta(minutes=31))[-1].count == 2


def test_one_open_problem_per_subject_even_when_two_sweeps_race(account, make_device):
    device = phone(make_device, account)
    Problem.objects.create(account=account, kind=Kind.SIM_FAILING, device=device, sim=0, detail="x")
    Problem.objects.create(account=account, kind=Kind.SIM_FAILING, device=device, sim=1, detail="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Problem.objects.create(
            account=account, kind=Kind.SIM_FAILING, device=device, sim=0, detail="y"
        )
    Problem.objects.filter(sim=0).update(resolved_at=timezone.now())
    Problem.objects.create(account=account, kind=Kind.SIM_FAILING, device=device, sim=0, detail="z")


def test_problems_in_the_rest_api_are_the_accounts_own(account, make_account, make_device):
    mine = phone(make_device, account)
    other_account = make_account()
    theirs = phone(make_device, other_account)
    send(account, mine, 1)
    send(other_account, theirs, 1)
    problems.sweep(timezone.now() + timedelta(minutes=11))
    _, secret = accounts.create_api_token(account, "ops")
    client = Client(headers={"authorization": f"Bearer {secret}"})

    listed = client.get("/api/v1/problems").json()["results"]
    assert [(p["kind"], p["device_id"], p["state"]) for p in listed] == [
        ("device_silent", mine.pk, "open")
    ]
    assert listed[0]["title"] == "Phone silent with SMS waiting"
    assert client.get(f"/api/v1/problems/{listed[0]['id']}").status_code == 200
    other = Problem.objects.get(account=other_account)
    assert client.get(f"/api/v1/problems/{other.pk}").status_code == 404
    assert client.get("/api/v1/problems?state=resolved").json()["results"] == []
    assert len(client.get("/api/v1/problems?state=open&kind=device_silent").json()["results"]) == 1
    bad = client.get("/api/v1/problems?state=maybe")
    assert bad.status_code == 400 and "state" in bad.json()["errors"]


def test_the_dashboard_links_each_problem_to_the_messages_concerned(
    account, make_account, make_device, make_user
):
    device = phone(make_device, account, title="Shop phone")
    ids = send(account, device, 2)
    other_account = make_account()
    theirs = phone(make_device, other_account)
    send(other_account, theirs, 1)
    problems.sweep(timezone.now() + timedelta(minutes=11))
    mine = Problem.objects.get(account=account)
    other = Problem.objects.get(account=other_account)
    user = make_user("staff@example.com", account=account, is_staff=True)
    client = Client()
    client.force_login(user)

    page = client.get("/admin/dashboard/").content.decode()
    assert "Phone silent with SMS waiting" in page and "Shop phone" in page
    assert f"?problem={mine.pk}" in page and f"?problem={other.pk}" not in page
    listed = client.get(f"/admin/messaging/message/?problem={mine.pk}").context["cl"].result_list
    assert sorted(m.pk for m in listed) == sorted(ids)
    foreign = client.get(f"/admin/messaging/message/?problem={other.pk}")
    assert list(foreign.context["cl"].result_list) == []
    assert client.get("/admin/messaging/problem/").status_code == 200
    assert client.get(f"/admin/messaging/problem/{other.pk}/change/").status_code == 302


def test_open_problems_are_a_metric(account, make_device):
    from prometheus_client import CollectorRegistry

    from gateway.metrics import FleetCollector

    device = phone(make_device, account)
    send(account, device, 1)
    problems.sweep(timezone.now() + timedelta(minutes=11))
    registry = CollectorRegistry()
    registry.register(FleetCollector())
    assert registry.get_sample_value("smsgateway_problems_open", {"kind": "device_silent"}) == 1
    assert registry.get_sample_value("smsgateway_problems_open", {"kind": "sim_failing"}) == 0
