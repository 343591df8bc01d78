"""Phones (devices) and their SIM slots."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from gateway.models import TenantQuerySet


class PhoneManager(models.Manager.from_queryset(TenantQuerySet)):  # type: ignore[misc]
    """Devices that are phones: a pool's handle row (the id it is known by in the
    SMSGateway24 API) is never listed, paired, polled or announced as a device."""

    def get_queryset(self) -> TenantQuerySet:
        return super().get_queryset().exclude(protocol=Device.Protocol.POOL)


class Device(models.Model):
    class Protocol(models.TextChoices):
        AGENT = "agent", "Gateway device protocol"
        SMSGATE = "smsgate", "SMSGate Android app"
        # Not a phone: the id of a pool (devices.models.Pool), taken from the devices' ids
        # so that SMSGateway24 clients address a pool as one more device_id.
        POOL = "pool", "Pool of SIMs"

    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="devices")
    title = models.CharField(max_length=150, default="Phone", help_text="Model name or a label.")
    number = models.CharField(max_length=32, blank=True)
    imei = models.CharField("IMEI", max_length=32, blank=True)
    serial_number = models.CharField(max_length=64, blank=True)
    app_version = models.CharField(max_length=32, blank=True)
    # Seconds between two SMS on one SIM; None = no extra delay (the platform limit holds).
    delay_between_sms = models.PositiveIntegerField(
        "Delay between SMS (seconds)", null=True, blank=True
    )
    # Seconds between two polls when there is nothing to send.
    delay_between_requests = models.PositiveIntegerField(
        "Delay between polls (seconds)", default=10
    )
    enabled = models.BooleanField(default=True)
    # Messages handed out per poll.
    batch_size = models.PositiveSmallIntegerField("Messages per poll", default=15)
    # SMS segments the phone may send per SIM per 60 s. Android allows 30 unless the phone's
    # sms_outgoing_check_max_count was raised; the device declares it when it pairs.
    segments_per_minute = models.PositiveSmallIntegerField(
        "SMS segments per minute per SIM", default=30
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField("Last seen", null=True, blank=True, editable=False)
    paired_at = models.DateTimeField(null=True, blank=True, editable=False)
    # SHA-256 of the device's bearer token (device API only); None until paired.
    # NULL, not "", for "no token": many unpaired devices must not collide on unique.
    token_hash = models.CharField(  # noqa: DJ001
        max_length=64, unique=True, null=True, editable=False
    )
    # Latest heartbeat extras, for the operator.
    battery_percent = models.PositiveSmallIntegerField(
        "Battery (%)", null=True, blank=True, editable=False
    )
    charging = models.BooleanField(null=True, blank=True, editable=False)
    signal_dbm = models.SmallIntegerField("Signal (dBm)", null=True, blank=True, editable=False)
    # The online state last announced to webhooks (None: never announced).
    announced_online = models.BooleanField(null=True, blank=True, editable=False)
    # Which phone protocol the device speaks (set when it registers).
    protocol = models.CharField(
        max_length=10, choices=Protocol.choices, default=Protocol.AGENT, editable=False
    )
    # SMSGate app: the key it signs its webhooks with (pushed through its settings).
    webhook_key = models.CharField(max_length=64, blank=True, editable=False)
    # SMSGate app: its settings and webhooks must be fetched again (fresh registration, or
    # the operator changed something they cover); the next event stream says so.
    needs_sync = models.BooleanField(default=False, editable=False)
    # The latest health report of the phone (SMSGate: system:ping), for the operator.
    health = models.JSONField(default=dict, blank=True, editable=False)
    # The device this one replaced when the same phone registered again (its waiting
    # messages moved here; its state reports are still accepted from this device's token).
    replaces = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_by",
        editable=False,
    )

    objects = PhoneManager()
    # Every row, pools' handles included (a message's device, a pool's handle).
    all_rows = TenantQuerySet.as_manager()

    class Meta:
        base_manager_name = "all_rows"
        indexes = [
            models.Index(fields=["account", "id"], name="device_account_idx"),
            models.Index(fields=["account", "imei"], name="device_account_imei_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(batch_size__gte=1) & Q(batch_size__lte=100),
                name="device_batch_size_range",
            ),
            models.CheckConstraint(
                condition=Q(segments_per_minute__gte=1) & Q(segments_per_minute__lte=1000),
                name="device_segments_per_minute_range",
            ),
            models.CheckConstraint(
                condition=Q(delay_between_requests__gte=1) & Q(delay_between_requests__lte=3600),
                name="device_poll_delay_range",
            ),
            models.CheckConstraint(
                condition=Q(delay_between_sms__isnull=True) | Q(delay_between_sms__lte=3600),
                name="device_sms_delay_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} (#{self.pk})"


class SimSlot(models.Model):
    """One SIM slot of a device, as the phone last reported it."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="sims")
    slot = models.PositiveSmallIntegerField(help_text="0-based slot index (the API's `sim`).")
    iccid = models.CharField(max_length=32, blank=True)
    number = models.CharField(max_length=32, blank=True)
    roaming = models.BooleanField(default=False)
    country_iso = models.CharField(max_length=8, blank=True)
    carrier_name = models.CharField(max_length=100, blank=True)
    # Pacing state, written only by devices.handoff under this row's lock: the earliest
    # time the next non-urgent SMS may go, and [epoch seconds, segments] of the sends
    # scheduled in the last 60 s (the platform limit's window).
    next_send_at = models.DateTimeField(null=True, blank=True, editable=False)
    recent_sends = models.JSONField(default=list, blank=True, editable=False)
    # Caps, because carriers block SIMs that send too much (devices.pools). None: no cap.
    # The hour is the last 60 minutes; days and months are the account's calendar ones.
    max_per_hour = models.PositiveIntegerField("Max SMS per hour", null=True, blank=True)
    max_per_day = models.PositiveIntegerField("Max SMS per day", null=True, blank=True)
    max_recipients_per_day = models.PositiveIntegerField(
        "Max distinct recipients per day", null=True, blank=True
    )
    max_recipients_per_month = models.PositiveIntegerField(
        "Max distinct recipients per month", null=True, blank=True
    )
    # Nothing is handed out between these times of day (the account's time zone); the
    # window may wrap midnight (22:00-07:00).
    quiet_from = models.TimeField("Quiet hours from", null=True, blank=True)
    quiet_until = models.TimeField("Quiet hours until", null=True, blank=True)

    class Meta:
        ordering = ["slot"]
        constraints = [
            models.UniqueConstraint(fields=["device", "slot"], name="simslot_unique_per_device"),
            models.CheckConstraint(condition=Q(slot__lte=7), name="simslot_slot_range"),
            models.CheckConstraint(
                condition=Q(quiet_from__isnull=True, quiet_until__isnull=True)
                | Q(quiet_from__isnull=False, quiet_until__isnull=False),
                name="simslot_quiet_hours_both",
            ),
        ]

    def __str__(self) -> str:
        return f"SIM {self.slot + 1} of device #{self.device_id}"

    # The operator's limits on this SIM (devices.pools.Quota enforces them).
    CAPS = (
        "max_per_hour",
        "max_per_day",
        "max_recipients_per_day",
        "max_recipients_per_month",
        "quiet_from",
        "quiet_until",
    )

    @property
    def has_caps(self) -> bool:
        return any(getattr(self, cap) is not None for cap in self.CAPS)


class Pool(models.Model):
    """A named set of SIMs of one account that messages are routed across (devices.pools).

    Its primary key is its handle, a Device row of protocol POOL: SMSGateway24 clients
    send to a pool by that id as to any device, and it can never collide with a phone's.
    """

    class Strategy(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round-robin"
        LEAST_LOADED = "least_loaded", "Least loaded"
        WEIGHTED = "weighted", "Weighted"
        STICKY = "sticky", "Sticky per recipient"

    handle = models.OneToOneField(
        Device, primary_key=True, on_delete=models.CASCADE, related_name="+", editable=False
    )
    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=150)
    strategy = models.CharField(
        max_length=20, choices=Strategy.choices, default=Strategy.ROUND_ROBIN
    )
    is_default = models.BooleanField(
        "Default pool",
        default=False,
        help_text="Messages sent without a device (REST API) go through this pool.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account"], condition=Q(is_default=True), name="pool_one_default"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (pool #{self.pk})"


class PoolMember(models.Model):
    """One SIM of a pool."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="members")
    sim = models.ForeignKey(SimSlot, on_delete=models.CASCADE, related_name="pool_memberships")
    weight = models.PositiveSmallIntegerField(
        default=1, help_text="Share of the pool's messages (weighted and sticky strategies)."
    )
    draining = models.BooleanField(
        default=False,
        help_text="Takes no new messages; those waiting for it move to the pool's other SIMs.",
    )
    # Routing state, written by devices.pools under the pool's lock: the smooth weighted
    # round-robin credit, and the health verdict of the last sweep.
    credit = models.FloatField(default=0.0, editable=False)
    failing = models.BooleanField(default=False, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "sim"], name="poolmember_once"),
            models.CheckConstraint(
                condition=Q(weight__gte=1) & Q(weight__lte=1000), name="poolmember_weight_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sim} in {self.pool}"


class PairingCode(models.Model):
    """A short, single-use, expiring code an operator gives a phone to pair it."""

    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="+")
    code_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True, editable=False)
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TenantQuerySet.as_manager()

    def __str__(self) -> str:
        return f"pairing code #{self.pk}"


class PhoneWebhookReceipt(models.Model):
    """A webhook call a phone made to us, by its envelope id: a retry is applied once."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=64)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "event_id"], name="phone_webhook_once")
        ]
        indexes = [models.Index(fields=["received_at"], name="phone_webhook_age_idx")]

    def __str__(self) -> str:
        return f"{self.event_id} from device #{self.device_id}"


class DeviceSignal(models.Model):
    """An event for a phone's live stream, for servers without Redis (the embedded default):
    every stream process reads new rows about once a second. A signal only; pruned after
    a minute."""

    device_id = models.BigIntegerField()
    kind = models.CharField(max_length=20)
    data = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.kind} for device #{self.device_id}"


class PhoneSettings(models.Model):
    """An account's settings for its SMSGate app phones, as SMSGate's integration API sets
    them (``GET``/``PUT``/``PATCH /settings``; devices.phone_settings): snake_case sections.
    What the server enforces itself (pacing, hourly and daily caps) is applied to the
    account's devices and SIMs; the rest is served to the phones."""

    account = models.OneToOneField(
        "gateway.Account", on_delete=models.CASCADE, related_name="phone_settings"
    )
    values = models.JSONField(default=dict, blank=True)
    # Write-only: signs the phones' webhooks to this server and this server's SMSGate-format
    # webhooks (never read back through the API).
    signing_key = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "phone settings"
        verbose_name_plural = "phone settings"

    def __str__(self) -> str:
        return f"phone settings of account {self.account_id}"
