"""Fleet problems: what beat's sweep finds wrong with every account's phones, SIMs, webhook
endpoints and newsletters, kept as rows that open and resolve.

Each kind is a query over what the server already records (docs/operations.md, "Fleet
problems"):

- ``device_silent``: an enabled phone not heard from for PROBLEM_SILENT_SECONDS (and offline
  by its own poll interval) while SMS due now wait for it.
- ``outcome_overdue``: SMS the phone took and confirmed, still without an outcome
  PROBLEM_OUTCOME_SECONDS after their send time (the "processed but never sent" class; at
  DEVICE_OUTCOME_SECONDS they end unknown).
- ``sim_failing``: of the outcomes of what a SIM was handed in the last hour, at least five
  arrived and at least half are failures (the verdict pools route around).
- ``unknown_outcomes``: of what a SIM was handed in the last 24 hours, at least 20 outcomes
  and at least 5 % unknown (22).
- ``webhook_failing``: an endpoint with events still undelivered after three attempts.
- ``newsletter_stalled``: a sending newsletter with SMS still to go, none of which reached
  an outcome for PROBLEM_STALL_SECONDS.

A sweep opens what it finds for the first time, refreshes what is still there and resolves
what is gone, in one transaction, with a webhook event (kind "problem") per opening and
resolution. Two beats running it at once serialise on a lock (PostgreSQL) and the partial
unique constraint ``problem_open_once``, so a problem is never open twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Min, Q, QuerySet
from django.utils import timezone

from contacts.models import Newsletter
from devices import queries
from devices.models import Device
from messaging import webhooks
from messaging.models import (
    CONFIRMED,
    FAILURES,
    OUTCOMES,
    Message,
    Problem,
    Status,
    WebhookEvent,
)

Kind = Problem.Kind

FAILING_WINDOW = timedelta(hours=1)
FAILING_MIN_OUTCOMES = 5
UNKNOWN_WINDOW = timedelta(hours=24)
UNKNOWN_MIN_OUTCOMES = 20
UNKNOWN_SHARE = 0.05
WEBHOOK_FAILED_ATTEMPTS = 3
# Any constant of our own: the transaction lock two beats' sweeps queue on (PostgreSQL).
_SWEEP_LOCK = 0x5_3D5_0B1E


@dataclass(frozen=True)
class Finding:
    """A problem as one sweep sees it: what it is about (the key), how many and what."""

    account_id: int
    kind: str
    device_id: int | None = None
    sim: int | None = None
    endpoint_id: int | None = None
    newsletter_id: int | None = None
    count: int = field(default=0, compare=False)
    detail: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return (
            self.account_id,
            self.kind,
            self.device_id,
            self.sim,
            self.endpoint_id,
            self.newsletter_id,
        )


def _key(problem: Problem) -> tuple[Any, ...]:
    return (
        problem.account_id,
        problem.kind,
        problem.device_id,
        problem.sim,
        problem.endpoint_id,
        problem.newsletter_id,
    )


def _minutes(span: timedelta) -> str:
    minutes = max(int(span.total_seconds() // 60), 0)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


# --- Detection ------------------------------------------------------------------------------


def _phones() -> list[Device]:
    return list(
        Device.objects.filter(enabled=True)
        .exclude(protocol=Device.Protocol.POOL)
        .only("pk", "account_id", "last_seen_at", "created_at", "delay_between_requests")
    )


def _silent(phones: list[Device], now: datetime) -> list[Finding]:
    quiet_for = timedelta(seconds=settings.PROBLEM_SILENT_SECONDS)
    quiet = {
        device.pk: device
        for device in phones
        if not queries.is_online(device, now)
        and (device.last_seen_at or device.created_at) <= now - quiet_for
    }
    if not quiet:
        return []
    found = []
    for device_id, waiting in (
        Message.objects.filter(status=Status.NEW, device_id__in=quiet, send_at__lte=now)
        .values_list("device_id")
        .annotate(n=Count("id"))
        .order_by()
    ):
        device = quiet[device_id]
        heard = (
            f"not heard from for {_minutes(now - device.last_seen_at)}"
            if device.last_seen_at
            else "never heard from"
        )
        found.append(
            Finding(
                device.account_id,
                Kind.DEVICE_SILENT,
                device_id=device_id,
                count=waiting,
                detail=f"{waiting} SMS waiting; the phone was {heard}",
            )
        )
    return found


def _overdue_cutoff(now: datetime) -> datetime:
    # A confirmed message's outcome deadline is its send time + DEVICE_OUTCOME_SECONDS.
    return now + timedelta(
        seconds=settings.DEVICE_OUTCOME_SECONDS - settings.PROBLEM_OUTCOME_SECONDS
    )


def _overdue(now: datetime) -> list[Finding]:
    outcome = timedelta(seconds=settings.DEVICE_OUTCOME_SECONDS)
    return [
        Finding(
            account_id,
            Kind.OUTCOME_OVERDUE,
            device_id=device_id,
            count=n,
            detail=(
                f"{n} SMS taken and confirmed by the phone without an outcome, the oldest "
                f"{_minutes(now - (oldest - outcome))} after its send time"
            ),
        )
        for account_id, device_id, n, oldest in Message.objects.filter(
            CONFIRMED, outcome_deadline_at__lte=_overdue_cutoff(now), device__isnull=False
        )
        .values_list("account_id", "device_id")
        .annotate(n=Count("id"), oldest=Min("outcome_deadline_at"))
        .order_by()
    ]


def _sims(phones: list[Device], now: datetime) -> list[Finding]:
    """Failing SIMs (last hour) and SIMs whose SMS end unknown (last 24 hours), in one
    grouped query over what the phones were handed (the SIMs' send-time index)."""
    if not phones:
        return []
    recent = Q(not_before_at__gte=now - FAILING_WINDOW)
    rows = (
        Message.objects.filter(
            device_id__in=[device.pk for device in phones],
            not_before_at__gte=now - UNKNOWN_WINDOW,
            status__in=[*OUTCOMES, Status.UNKNOWN],
        )
        .values_list("account_id", "device_id", "sim")
        .annotate(
            reported=Count("id"),
            unknown=Count("id", filter=Q(status=Status.UNKNOWN)),
            recent=Count("id", filter=recent),
            recent_failed=Count("id", filter=recent & Q(status__in=FAILURES)),
        )
        .order_by()
    )
    found = []
    for account_id, device_id, sim, reported, unknown, recent_n, failed in rows:
        if recent_n >= FAILING_MIN_OUTCOMES and 2 * failed >= recent_n:
            found.append(
                Finding(
                    account_id,
                    Kind.SIM_FAILING,
                    device_id=device_id,
                    sim=sim,
                    count=failed,
                    detail=f"{failed} of its last hour's {recent_n} outcomes are failures",
                )
            )
        if reported >= UNKNOWN_MIN_OUTCOMES and unknown >= UNKNOWN_SHARE * reported:
            found.append(
                Finding(
                    account_id,
                    Kind.UNKNOWN_OUTCOMES,
                    device_id=device_id,
                    sim=sim,
                    count=unknown,
                    detail=(
                        f"{unknown} of {reported} SMS of the last 24 hours ended unknown "
                        f"({100 * unknown / reported:.0f} %): the phone took them and never "
                        "reported"
                    ),
                )
            )
    return found


def _webhooks() -> list[Finding]:
    return [
        Finding(
            account_id,
            Kind.WEBHOOK_FAILING,
            endpoint_id=endpoint_id,
            count=n,
            detail=(
                f"{n} events undelivered after {WEBHOOK_FAILED_ATTEMPTS} or more attempts; "
                f"last error: {error or '-'}"
            )[:300],
        )
        for endpoint_id, account_id, n, error in WebhookEvent.objects.filter(
            state=WebhookEvent.State.PENDING,
            attempts__gte=WEBHOOK_FAILED_ATTEMPTS,
            endpoint__enabled=True,
        )
        .values_list("endpoint_id", "endpoint__account_id")
        .annotate(n=Count("id"), error=Min("last_error"))
        .order_by()
    ]


def _stalled(now: datetime) -> list[Finding]:
    still = timedelta(seconds=settings.PROBLEM_STALL_SECONDS)
    found = []
    for newsletter in Newsletter.objects.filter(
        state=Newsletter.State.SENDING, fanned_out_at__lte=now - still
    ).exclude(progressed_at__gt=now - still):
        left = newsletter.queued_count - newsletter.sent_count - newsletter.failed_count
        if left <= 0:
            continue
        since = newsletter.progressed_at or newsletter.fanned_out_at
        assert since is not None
        found.append(
            Finding(
                newsletter.account_id,
                Kind.NEWSLETTER_STALLED,
                newsletter_id=newsletter.pk,
                device_id=newsletter.device_id,
                count=left,
                detail=f"{left} SMS to go; none reached an outcome for {_minutes(now - since)}",
            )
        )
    return found


def detect(now: datetime | None = None) -> list[Finding]:
    """Every problem of every account as of ``now`` (a few grouped, indexed queries)."""
    now = now or timezone.now()
    phones = _phones()
    return [
        *_silent(phones, now),
        *_overdue(now),
        *_sims(phones, now),
        *_webhooks(),
        *_stalled(now),
    ]


# --- The sweep ------------------------------------------------------------------------------


@dataclass
class SweepResult:
    opened: list[Problem]
    resolved: list[Problem]
    still_open: int


def sweep(now: datetime | None = None) -> SweepResult:
    """Open, refresh and resolve problems to match what ``detect`` finds now."""
    now = now or timezone.now()
    findings = {finding.key: finding for finding in detect(now)}
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SWEEP_LOCK])
        current = {_key(p): p for p in Problem.objects.select_for_update().filter(resolved_at=None)}
        opened = [
            Problem(
                account_id=f.account_id,
                kind=f.kind,
                device_id=f.device_id,
                sim=f.sim,
                endpoint_id=f.endpoint_id,
                newsletter_id=f.newsletter_id,
                count=f.count,
                detail=f.detail[:300],
                opened_at=now,
                seen_at=now,
            )
            for key, f in findings.items()
            if key not in current
        ]
        opened = Problem.objects.bulk_create(opened)
        kept = []
        for key, problem in current.items():
            finding = findings.get(key)
            if finding is not None:
                problem.count, problem.detail, problem.seen_at = (
                    finding.count,
                    finding.detail[:300],
                    now,
                )
                kept.append(problem)
        Problem.objects.bulk_update(kept, ["count", "detail", "seen_at"])
        resolved = [p for key, p in current.items() if key not in findings]
        Problem.objects.filter(pk__in=[p.pk for p in resolved]).update(resolved_at=now)
        for problem in resolved:
            problem.resolved_at = now
        webhooks.problems_changed(opened, resolved)
    return SweepResult(opened, resolved, len(kept) + len(opened))


# --- Reading --------------------------------------------------------------------------------


def concerned(problem: Problem, now: datetime | None = None) -> Q | None:
    """The messages a problem is about, as it was last found (None: it is not about
    messages: a webhook endpoint's problem is about its events)."""
    now = now or timezone.now()
    device, sim = problem.device_id, problem.sim
    if problem.kind == Kind.DEVICE_SILENT:
        return Q(device_id=device, status=Status.NEW, send_at__lte=now)
    if problem.kind == Kind.OUTCOME_OVERDUE:
        return CONFIRMED & Q(device_id=device, outcome_deadline_at__lte=_overdue_cutoff(now))
    if problem.kind == Kind.SIM_FAILING:
        return Q(
            device_id=device,
            sim=sim,
            status__in=FAILURES,
            not_before_at__gte=now - FAILING_WINDOW,
        )
    if problem.kind == Kind.UNKNOWN_OUTCOMES:
        return Q(
            device_id=device,
            sim=sim,
            status=Status.UNKNOWN,
            not_before_at__gte=now - UNKNOWN_WINDOW,
        )
    if problem.kind == Kind.NEWSLETTER_STALLED:
        return Q(newsletter_id=problem.newsletter_id, status__in=[Status.NEW, Status.TAKEN])
    return None


def open_problems(queryset: QuerySet[Problem] | None = None) -> QuerySet[Problem]:
    """Open problems, newest first, with what they are about loaded."""
    base = Problem.objects.all() if queryset is None else queryset
    return (
        base.filter(resolved_at=None)
        .select_related("device", "endpoint", "newsletter")
        .order_by(F("opened_at").desc(), "-id")
    )
