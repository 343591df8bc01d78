"""Accounts (the tenants), their users, and API tokens."""

from __future__ import annotations

import secrets
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone


def _new_salt() -> str:
    return secrets.token_hex(16)


def validate_time_zone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone such as Europe/Berlin") from None


def _default_time_zone() -> str:
    return settings.DEFAULT_ACCOUNT_TIME_ZONE


class Account(models.Model):
    """A tenant. Every device, message, contact and newsletter belongs to exactly one."""

    name = models.CharField(max_length=150)
    time_zone = models.CharField(
        max_length=64,
        default=_default_time_zone,
        validators=[validate_time_zone],
        help_text="IANA zone used to render dates to this account's API clients.",
    )
    # The compatibility token is derived from the server secret and this salt; a new salt
    # makes a new token and so revokes the old one.
    compat_token_salt = models.CharField(max_length=64, default=_new_salt, editable=False)
    # Likewise for the enrollment token phones of the SMSGate app register with.
    enroll_token_salt = models.CharField(max_length=64, default=_new_salt, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.name


class TenantQuerySet(models.QuerySet):
    def for_account(self, account: Account | int) -> TenantQuerySet:
        account_id = account if isinstance(account, int) else account.pk
        return self.filter(account_id=account_id)


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(
        self,
        email: str,
        password: str | None = None,
        *,
        account: Account | None = None,
        **extra: Any,
    ) -> User:
        """Create a login. Without an account, a new account named after the email is made."""
        if not email:
            raise ValueError("An email address is required")
        email = self.normalize_email(email).lower()
        if account is None:
            account = Account.objects.create(name=email)
        user = self.model(email=email, account=account, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, username: str | None) -> User:
        # Emails are stored lower-case, so logins are case-insensitive and still indexed.
        return self.get(email=(username or "").strip().lower())


class User(AbstractBaseUser, PermissionsMixin):
    """A person who logs in (admin, gettoken, smstosend) with an email and a password."""

    email = models.EmailField(unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="users")
    full_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    def __str__(self) -> str:
        return self.email


class ApiToken(models.Model):
    """A bearer token of an account. Only a SHA-256 of the secret is stored.

    Tokens are random with at least 128 bits of entropy, so a fast hash is enough: nobody
    can brute-force the preimage, and lookups stay one indexed equality.
    """

    class Kind(models.TextChoices):
        API = "api", "API token"
        COMPAT = "compat", "SMSGateway24 compatibility token"
        ENROLL = "enroll", "Phone enrollment token (SMSGate app)"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.API)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # First characters of the secret, enough for a person to tell tokens apart.
    prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"
        verbose_name_plural = "API tokens"
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["api", "compat", "enroll"]), name="apitoken_kind_valid"
            ),
            # One live compatibility token per account: gettoken always answers with it.
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(kind="compat", revoked_at__isnull=True),
                name="apitoken_one_live_compat_per_account",
            ),
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(kind="enroll", revoked_at__isnull=True),
                name="apitoken_one_live_enroll_per_account",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ServiceHeartbeat(models.Model):
    """Last time a background process proved it was alive (shown by /readyz and the admin)."""

    name = models.CharField(max_length=50, primary_key=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"


class IssuedJwt(models.Model):
    """A pair of JWTs issued by SMSGate's integration API (``POST /auth/token``): the access
    token and its refresh token share this row's ``jti``. Revoking the row (or refreshing
    the pair, which spends it) ends both."""

    jti = models.CharField(max_length=32, unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    access_expires_at = models.DateTimeField()
    refresh_expires_at = models.DateTimeField()
    # Set when revoked, or when its refresh token was used (a second use is a replay).
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SMSGate API token"
        indexes = [models.Index(fields=["refresh_expires_at"], name="jwt_expiry_idx")]

    def __str__(self) -> str:
        return self.jti
