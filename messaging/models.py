"""SMS messages, their status codes and the legal moves between them.

This module is the one home of the lifecycle: the codes (the SMSGateway24 codes, kept
numerically identical because clients switch on them, plus three of ours) and the table of
legal moves. ``messaging.services`` is the only code that writes a status.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from gateway.models import TenantQuerySet


class Status(models.IntegerChoices):
    # SMSGateway24 codes (spec §3). The labels are what the compatibility API prints.
    NEW = 1, "New"
    TAKEN = 2, "Taken from Server"
    QUEUED = 3, "Queued"
    INCOMING = 5, "Income"
    SENT = 6, "Sent by Phone"
    DELIVERED = 7, "Delivered"
    NOT_DELIVERED = 8, "Sms Not Delivered"
    GENERIC_FAILURE = 9, "Not SENT - Generic failure"
    NO_SERVICE = 10, "Not sent - No service"
    NULL_PDU = 11, "Not Sent - Null PDU"
    RADIO_OFF = 12, "Not Sent - Radio off"
    NOT_ALLOWED = 100, "not sent - NOT ALLOWED"
    NOT_ALLOWED_AT_ALL = 101, "not sent - Not Allowed At all"
    # Ours. Clients of the hosted service never saw these, and treat unknown codes as
    # display text; docs/statuses.md explains them.
    CANCELLED = 20, "Cancelled"
    EXPIRED = 21, "Expired - not sent before its deadline"
    UNKNOWN = 22, "Unknown - the phone never reported an outcome"

    @property
    def short_title(self) -> str:
        """The lower-case word of `statustitle` in getallsms (spec §3)."""
        return _SHORT_TITLES[self]


_SHORT_TITLES = {
    Status.NEW: "new",
    Status.TAKEN: "sending",
    Status.QUEUED: "queued",
    Status.INCOMING: "income",
    Status.SENT: "sent",
    Status.DELIVERED: "delivered",
    Status.NOT_DELIVERED: "not delivered",
    Status.GENERIC_FAILURE: "failed",
    Status.NO_SERVICE: "failed",
    Status.NULL_PDU: "failed",
    Status.RADIO_OFF: "failed",
    Status.NOT_ALLOWED: "failed",
    Status.NOT_ALLOWED_AT_ALL: "failed",
    Status.CANCELLED: "cancelled",
    Status.EXPIRED: "expired",
    Status.UNKNOWN: "unknown",
}

FAILURES = frozenset(
    {
        Status.GENERIC_FAILURE,
        Status.NO_SERVICE,
        Status.NULL_PDU,
        Status.RADIO_OFF,
        Status.NOT_ALLOWED,
        Status.NOT_ALLOWED_AT_ALL,
    }
)
# What a phone can say happened to a message it took.
OUTCOMES = frozenset({Status.SENT, Status.DELIVERED, Status.NOT_DELIVERED} | FAILURES)
# What counts as "failed" wherever results are summed up (newsletter progress, the admin's
# dashboard): the phone's failures, no delivery, never sent in time, no word from the phone.
FAILED = FAILURES | {Status.NOT_DELIVERED, Status.EXPIRED, Status.UNKNOWN}

# The legal moves: target status -> the statuses it may be reached from. Everything not
# listed is illegal. Reading it by target is what a compare-and-set needs
# (UPDATE ... WHERE status IN sources). The keys are the statuses of our lifecycle.
#
# - NEW is reached only from TAKEN: a lease the phone never confirmed goes back to the queue.
# - Outcomes are reachable from TAKEN and also from UNKNOWN: a late report from the phone
#   is the truth and replaces our guess. Likewise a message cancelled after the phone
#   confirmed it may still have gone out: "sent"/"delivered" from the phone then wins.
# - Monotonic: DELIVERED, NOT_DELIVERED and failures are final, so a late or repeated
#   "sent" after "delivered" is not a legal move and changes nothing.
# - INCOMING is only ever created, never moved into or out of.
# - QUEUED (3) is a code of the hosted service that this server never produces (a phone's
#   own queue is our TAKEN and confirmed): clients may know it, the lifecycle has no move
#   into or out of it.
LEGAL_SOURCES: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.TAKEN}),
    Status.TAKEN: frozenset({Status.NEW}),
    Status.SENT: frozenset({Status.TAKEN, Status.UNKNOWN, Status.CANCELLED}),
    Status.DELIVERED: frozenset({Status.TAKEN, Status.SENT, Status.UNKNOWN, Status.CANCELLED}),
    Status.NOT_DELIVERED: frozenset({Status.TAKEN, Status.SENT, Status.UNKNOWN, Status.CANCELLED}),
    **{failure: frozenset({Status.NEW, Status.TAKEN, Status.UNKNOWN}) for failure in FAILURES},
    Status.CANCELLED: frozenset({Status.NEW, Status.TAKEN}),
    Status.EXPIRED: frozenset({Status.NEW}),
    Status.UNKNOWN: frozenset({Status.TAKEN}),
    Status.INCOMING: frozenset(),
}
# Statuses of the lifecycle with no legal move out of them.
FINAL = frozenset(
    s for s in LEGAL_SOURCES if not any(s in sources for sources in LEGAL_SOURCES.values())
)

# The hand-off's two sub-states of TAKEN. Leased but not confirmed: the phone may never
# have got it, so it returns to the queue when its lease expires. Confirmed: the phone has
# it and owes an outcome; it is never handed out again.
UNCONFIRMED = Q(status=Status.TAKEN, confirmed_at__isnull=True)
CONFIRMED = Q(status=Status.TAKEN, confirmed_at__isnull=False)


def served_id(pk: int, created_at: datetime) -> str:
    """The id a phone protocol shows for a message: ``<pk>-<tag>``, the tag a hash of the
    creation time to the microsecond. Phones (the SMSGate app) never send an id they have
    seen again, so an id must never come back for another message, not even after the
    database was reset or restored from a backup and the primary keys start over."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    return f"{pk}-{hashlib.sha256(f'{pk}:{stamp}'.encode()).hexdigest()[:8]}"


_SERVED_ID = re.compile(r"([1-9][0-9]{0,18})-[0-9a-f]{8}")


def served_pk(text: object) -> int | None:
    """The primary key in a served id (its tag is checked against the row by the caller)."""
    match = _SERVED_ID.fullmatch(text) if isinstance(text, str) else None
    return int(match.group(1)) if match else None


class Message(models.Model):
    """One SMS, outgoing or incoming (status INCOMING)."""

    # No single-column index: every index below starts with the account (fewer indexes to
    # maintain per inserted row; bulk ingest writes tens of thousands a second).
    account = models.ForeignKey(
        "gateway.Account", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # Kept when a device is deleted, so the history of what it sent survives.
    device = models.ForeignKey(
        "devices.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    sim = models.PositiveSmallIntegerField(default=0, help_text="SIM slot, 0-based.")
    # Sent through a pool: device and sim are where the pool routed it (None: no SIM may
    # take it yet, hold_reason says why); they are final once a phone takes it.
    pool = models.ForeignKey(
        "devices.Pool",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    hold_reason = models.CharField(max_length=200, blank=True)
    # Pools: the server asked the phone holding this confirmed message to give it back
    # (it had no outcome long after its send time); and the phone that did give one back,
    # which the pool never routes it to again (devices.pools.take_back).
    revoke_requested_at = models.DateTimeField(null=True, blank=True)
    revoked_from = models.BigIntegerField(null=True, blank=True)
    # Normalized; as the client gave it when it asked so (SMSGate's skipPhoneValidation),
    # and its ciphertext for an encrypted message.
    phone = models.CharField(max_length=128, help_text="Normalized recipient (or sender).")
    phone_raw = models.CharField(max_length=64, blank=True, help_text="As the client sent it.")
    body = models.TextField()
    # A data SMS to this port (body: its payload in base64), and content and recipient
    # encrypted end to end by the client (passed to the phone untouched): SMSGate's API.
    data_port = models.PositiveIntegerField(null=True, blank=True)
    encrypted = models.BooleanField(default=False, db_default=False)
    # Whether the phone asks the network for a delivery report (SMSGate's
    # withDeliveryReport); without one the message ends Sent.
    delivery_report = models.BooleanField(default=True, db_default=True)
    status = models.PositiveSmallIntegerField(choices=Status.choices, default=Status.NEW)
    send_at = models.DateTimeField(default=timezone.now, help_text="Not handed out before.")
    # Not handed out after (SMSGate's ttl/validUntil), and EXPIRED once past while waiting;
    # None: MESSAGE_EXPIRY_HOURS after send_at.
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Not sent after.")
    urgent = models.BooleanField(default=False)
    customer_id = models.BigIntegerField(null=True, blank=True)
    # Indexed by the unique (newsletter, phone) constraint below.
    newsletter = models.ForeignKey(
        "contacts.Newsletter",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    segments = models.PositiveSmallIntegerField(default=1)
    error_detail = models.CharField(max_length=500, blank=True)
    # The hand-off to the phone (messaging.lifecycle): a poll leases the message (lease_id)
    # until lease_expires_at; the phone confirms receipt (confirmed_at) and then owes an outcome
    # by outcome_deadline_at. not_before_at is the paced earliest send time.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Which poll holds the lease: a confirm must present it, so of two processes polling
    # with one device token only the holder of the latest lease can be told to send.
    lease_id = models.UUIDField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    not_before_at = models.DateTimeField(null=True, blank=True)
    outcome_deadline_at = models.DateTimeField(null=True, blank=True)
    parts_sent = models.PositiveSmallIntegerField(null=True, blank=True)
    # Incoming SMS: the phone's own id of the message, so a repeated upload is stored once.
    external_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        indexes = [
            # The device claim: this device's due NEW messages, urgent first, then by time.
            models.Index(
                "device",
                "sim",
                models.F("urgent").desc(),
                "send_at",
                "id",
                name="message_claim_idx",
                condition=Q(status=Status.NEW),
            ),
            # Listing an account's messages newest/oldest first, optionally by status.
            models.Index(fields=["account", "id"], name="message_account_id_idx"),
            models.Index(fields=["account", "status", "id"], name="message_account_status_idx"),
            models.Index(fields=["account", "device", "id"], name="message_account_device_idx"),
            models.Index(fields=["account", "phone"], name="message_account_phone_idx"),
            models.Index(
                fields=["account", "customer_id"],
                name="message_account_customer_idx",
                condition=Q(customer_id__isnull=False),
            ),
            # Date windows are listed in (created_at, id) order from this index.
            models.Index(
                fields=["account", "created_at", "id"], name="message_account_created_idx"
            ),
            # A newsletter's messages, newest first (their rows sit together, deep in the id
            # order, where walking the primary key would skip everything newer).
            models.Index(
                fields=["newsletter", "id"],
                name="message_newsletter_idx",
                condition=Q(newsletter__isnull=False),
            ),
            # What was sent through a pool, newest first.
            models.Index(
                fields=["pool", "id"],
                name="message_pool_idx",
                condition=Q(pool__isnull=False),
            ),
            # A pool's waiting messages, for its routing sweep.
            models.Index(
                fields=["pool", "send_at"],
                name="message_pool_waiting_idx",
                condition=Q(status=Status.NEW, pool__isnull=False),
            ),
            # What a SIM was handed, by paced send time: its caps' usage.
            models.Index(
                fields=["device", "sim", "not_before_at"],
                name="message_sim_sends_idx",
                condition=Q(not_before_at__isnull=False),
            ),
            # Waiting (NEW) messages by send time, for the expiry sweep.
            models.Index(
                fields=["send_at"], name="message_pending_idx", condition=Q(status=Status.NEW)
            ),
            # Waiting messages with a validity of their own, for the expiry sweep.
            models.Index(
                fields=["valid_until"],
                name="message_valid_until_idx",
                condition=Q(status=Status.NEW, valid_until__isnull=False),
            ),
            # Leases awaiting confirmation (re-poll, reaper) and confirmed ones awaiting an
            # outcome (deadline sweep).
            models.Index(
                fields=["device", "lease_expires_at"],
                name="message_lease_idx",
                condition=UNCONFIRMED,
            ),
            # Cancellations a phone must hear of (confirmed, then cancelled), per device.
            models.Index(
                fields=["device", "status_changed_at"],
                name="message_cancel_notice_idx",
                condition=Q(status=Status.CANCELLED, confirmed_at__isnull=False),
            ),
            # SMSGate app: cancelled messages it was served and has not answered about
            # (served as "Cancelling" until it does; lease_id is cleared by its answer).
            models.Index(
                fields=["device", "send_at"],
                name="message_cancelling_idx",
                condition=Q(status=Status.CANCELLED, lease_id__isnull=False),
            ),
            models.Index(
                fields=["outcome_deadline_at"],
                name="message_outcome_due_idx",
                condition=CONFIRMED,
            ),
            # Messages by the client's own id (SMSGate's integration API: GET /messages/{id}).
            models.Index(
                fields=["account", "external_id"],
                name="message_client_id_idx",
                condition=~Q(external_id="") & ~Q(status=Status.INCOMING),
            ),
            # Pooled messages a phone is asked to give back, per device (its polls list them).
            models.Index(
                fields=["device"],
                name="message_revoke_idx",
                condition=Q(status=Status.TAKEN, revoke_requested_at__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in Status]), name="message_status_valid"
            ),
            models.CheckConstraint(condition=Q(segments__gte=1), name="message_segments_positive"),
            # A newsletter writes one message per number, however often its fan-out runs.
            models.UniqueConstraint(
                fields=["newsletter", "phone"],
                condition=Q(newsletter__isnull=False),
                name="message_once_per_newsletter_phone",
            ),
            models.UniqueConstraint(
                fields=["device", "external_id"],
                condition=Q(status=Status.INCOMING) & ~Q(external_id=""),
                name="message_incoming_once_per_device",
            ),
            # A client's message id names one message: each recipient once.
            models.UniqueConstraint(
                fields=["account", "external_id", "phone"],
                condition=~Q(status=Status.INCOMING) & ~Q(external_id=""),
                name="message_client_id_once_per_phone",
            ),
        ]

    def __str__(self) -> str:
        return f"SMS #{self.pk} ({Status(self.status).label})"


class MessageStatusChange(models.Model):
    """One move of a message's status; written by the same statement group as the move."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="history")
    from_status = models.PositiveSmallIntegerField(choices=Status.choices)
    to_status = models.PositiveSmallIntegerField(choices=Status.choices)
    changed_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=50, blank=True, help_text="Who made the move.")
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["message", "changed_at"], name="status_change_msg_idx"),
            models.Index(fields=["changed_at"], name="status_change_age_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(to_status__in=[s.value for s in Status]),
                name="status_change_to_valid",
            ),
            models.CheckConstraint(
                condition=Q(from_status__in=[s.value for s in Status]),
                name="status_change_from_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.message_id}: {self.from_status} → {self.to_status}"


def _webhook_secret() -> str:
    return secrets.token_hex(32)


class WebhookEndpoint(models.Model):
    """Where to POST events: for one device, or (device empty) for all of an account's."""

    class Kind(models.TextChoices):
        STATUS = "status", "SMS status changes"
        INCOMING = "incoming", "Incoming SMS"
        DEVICE = "device", "Device online/offline"
        PROBLEM = "problem", "Fleet problems opened/resolved"
        # SMSGate's integration API: one SMSGate event (``event``), in its format.
        SMSGATE = "smsgate", "SMSGate API event"

    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="+")
    device = models.ForeignKey(
        "devices.Device",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhooks",
        help_text="Empty: every device of the account.",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    url = models.URLField("URL", max_length=500)
    # Shared with the receiver, which needs it to check signatures: stored as it is.
    secret = models.CharField(max_length=64, default=_webhook_secret)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # SMSGate's integration API: its webhook id (the client's, or made up) and its event.
    client_id = models.CharField("SMSGate webhook id", max_length=36, blank=True)
    event = models.CharField("SMSGate event", max_length=30, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["account", "kind"], name="webhook_account_kind_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["status", "incoming", "device", "problem", "smsgate"]),
                name="webhook_kind_valid",
            ),
            models.UniqueConstraint(
                fields=["account", "client_id"],
                condition=~Q(client_id=""),
                name="webhook_client_id_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.url}"


class WebhookEvent(models.Model):
    """One event for one endpoint: the durable outbox row and its delivery log."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="events")
    # Stable across retries: receivers use it to drop duplicates.
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=20)
    # The exact JSON sent (and signed): kept as text so its key order is the spec's on every
    # database (PostgreSQL's jsonb would reorder keys).
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # The last attempts: [{"at", "status", "error", "ms"}], newest last, at most 50.
    log = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_event_due_idx",
                condition=Q(state="pending"),
            ),
            models.Index(fields=["endpoint", "created_at"], name="webhook_event_endpoint_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["pending", "delivered", "failed"]),
                name="webhook_event_state_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.event_id} ({self.state})"

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class IdempotencyKey(models.Model):
    """A create request of the REST API made with an Idempotency-Key, and its answer."""

    # How long a key is kept (promised to clients, whatever the history retention).
    KEEP = timedelta(hours=24)

    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    # None while the first request is being processed.
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="idempotency_key_per_account")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_age_idx")]

    def __str__(self) -> str:
        return self.key


class Problem(models.Model):
    """Something wrong with the fleet, found by beat's problem sweep (messaging.problems):
    open while the sweep keeps finding it, resolved when it no longer does."""

    class Kind(models.TextChoices):
        DEVICE_SILENT = "device_silent", "Phone silent with SMS waiting"
        OUTCOME_OVERDUE = "outcome_overdue", "SMS sent by the phone without an outcome"
        SIM_FAILING = "sim_failing", "SIM failing"
        UNKNOWN_OUTCOMES = "unknown_outcomes", "SMS ending unknown (22)"
        WEBHOOK_FAILING = "webhook_failing", "Webhook endpoint failing"
        NEWSLETTER_STALLED = "newsletter_stalled", "Newsletter stalled"

    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # What the problem is about, one of: a device (and SIM), a webhook endpoint, a newsletter.
    device = models.ForeignKey(
        "devices.Device", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    sim = models.PositiveSmallIntegerField(null=True, blank=True, help_text="SIM slot, 0-based.")
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    newsletter = models.ForeignKey(
        "contacts.Newsletter", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # The messages (or webhook events) concerned when last swept, and what was found.
    count = models.PositiveIntegerField(default=0)
    detail = models.CharField(max_length=300)
    opened_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["account", "id"], name="problem_account_idx"),
            models.Index(
                fields=["opened_at"], name="problem_open_idx", condition=Q(resolved_at=None)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "device_silent",
                        "outcome_overdue",
                        "sim_failing",
                        "unknown_outcomes",
                        "webhook_failing",
                        "newsletter_stalled",
                    ]
                ),
                name="problem_kind_valid",
            ),
            # One open problem per kind and subject (two beats cannot open it twice).
            models.UniqueConstraint(
                "account",
                "kind",
                Coalesce("device", Value(0)),
                Coalesce("sim", Value(0)),
                Coalesce("endpoint", Value(0)),
                Coalesce("newsletter", Value(0)),
                condition=Q(resolved_at=None),
                name="problem_open_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.detail}"
