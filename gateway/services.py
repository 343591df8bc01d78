"""Accounts and tokens: the only code that creates, derives, checks or revokes a token."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from gateway import counters, rows
from gateway.models import Account, ApiToken, User

log = logging.getLogger(__name__)

API_TOKEN_PREFIX = "sgw_"  # noqa: S105 (a label, not a secret)
ENROLL_TOKEN_PREFIX = "enr_"  # noqa: S105 (a label, not a secret)


class TokenNotFound(Exception):
    pass


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class InvalidAccount(ValueError):
    """The account or its first login cannot be created; the text says why."""


def create_account(
    email: str,
    password: str,
    *,
    name: str = "",
    time_zone: str | None = None,
    staff: bool = True,
    superuser: bool = False,
) -> User:
    """A new account and its first login, its owner, in one transaction.

    The owner is staff of this account only (the admin shows them their account's objects)
    unless ``staff`` is false (API only); ``superuser`` makes the server's operator, who
    sees every account. Raises InvalidAccount for a bad or taken email or a bad time zone;
    nothing is stored then. Not idempotent: the email must be new.
    """
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidAccount(f"Not an email address: {email!r}") from None
    if User.objects.filter(email=email).exists():
        raise InvalidAccount(f"A login with the email {email} already exists")
    with transaction.atomic():
        account = Account(name=(name or email)[:150])
        if time_zone:
            account.time_zone = time_zone
        try:
            account.full_clean()
        except ValidationError as exc:
            raise InvalidAccount("; ".join(exc.messages)) from None
        account.save()
        return User.objects.create_user(
            email,
            password,
            account=account,
            is_staff=staff or superuser,
            is_superuser=superuser,
        )


def create_api_token(account: Account, name: str) -> tuple[ApiToken, str]:
    """Make a new named API token and return it with its secret, which is not kept anywhere.

    The caller shows the secret once; afterwards only its hash and prefix exist.
    """
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        account=account,
        name=name.strip()[:100] or "API token",
        kind=ApiToken.Kind.API,
        token_hash=hash_token(secret),
        prefix=secret[:12],
    )
    return token, secret


@dataclass(frozen=True)
class _Derived:
    """A token that is derived from the server secret and an account salt, so the admin can
    show it again while the database holds only its hash."""

    kind: str
    salt_field: str
    purpose: str
    name: str
    prefix: str = ""


_COMPAT = _Derived(
    ApiToken.Kind.COMPAT,
    "compat_token_salt",
    "gateway.compat-token",
    "SMSGateway24 compatibility token",
)
_ENROLL = _Derived(
    ApiToken.Kind.ENROLL,
    "enroll_token_salt",
    "gateway.enroll-token",
    "Phone enrollment token",
    ENROLL_TOKEN_PREFIX,
)
_DERIVED = {d.kind: d for d in (_COMPAT, _ENROLL)}


def _derive(account: Account, kind: _Derived) -> str:
    # 128 bits as 32 lower-case hex characters (the shape SMSGateway24 clients know).
    digest = salted_hmac(kind.purpose, getattr(account, kind.salt_field), algorithm="sha256")
    return kind.prefix + digest.hexdigest()[:32]


def _derived_token(account: Account, kind: _Derived) -> str:
    """The account's token of this kind: the same value on every call until revoked.

    The first call (or the first after a salt or SECRET_KEY change) registers the hash and
    revokes any previous token of the kind. When the derived token was revoked (REST or
    admin revoke), the account gets a new salt and so a fresh token: a revoked token is
    never handed out again. Idempotent otherwise.
    """
    secret = _derive(account, kind)
    if ApiToken.objects.filter(token_hash=hash_token(secret), revoked_at__isnull=True).exists():
        return secret
    try:
        with transaction.atomic():
            # One writer per account: concurrent first calls agree on one salt and token.
            locked = Account.objects.select_for_update().get(pk=account.pk)
            setattr(account, kind.salt_field, getattr(locked, kind.salt_field))
            secret = _derive(account, kind)
            known = list(
                ApiToken.objects.filter(token_hash=hash_token(secret)).values_list(
                    "revoked_at", flat=True
                )
            )
            if known and known[0] is None:
                return secret  # registered meanwhile
            if known:
                _new_salt(account, kind)
                secret = _derive(account, kind)
            ApiToken.objects.filter(
                account=account, kind=kind.kind, revoked_at__isnull=True
            ).update(revoked_at=timezone.now())
            ApiToken.objects.create(
                account=account,
                name=kind.name,
                kind=kind.kind,
                token_hash=hash_token(secret),
                prefix=secret[: 8 + len(kind.prefix)],
            )
    except IntegrityError:
        # SQLite has no row lock: a concurrent first call registered the same hash.
        pass
    return secret


def compat_token(account: Account) -> str:
    """The account's SMSGateway24 token (what ``gettoken`` answers)."""
    return _derived_token(account, _COMPAT)


def enrollment_token(account: Account) -> str:
    """The account's enrollment token: SMSGate phones register with it (``Bearer``), and
    the app's automatic re-registrations carry it. Shown in the admin."""
    return _derived_token(account, _ENROLL)


def account_for_enrollment_token(secret: str) -> Account | None:
    """The account whose live enrollment token this is, or None."""
    if not secret.startswith(ENROLL_TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.select_related("account")
        .filter(token_hash=hash_token(secret), kind=ApiToken.Kind.ENROLL, revoked_at__isnull=True)
        .first()
    )
    return None if token is None else token.account


def _new_salt(account: Account, kind: _Derived) -> None:
    salt = secrets.token_hex(16)
    setattr(account, kind.salt_field, salt)
    Account.objects.filter(pk=account.pk).update(**{kind.salt_field: salt})


def revoke_token(account: Account, token_id: int) -> None:
    """Revoke one of the account's tokens. Revoking a revoked token changes nothing.

    Revoking the compatibility (or enrollment) token also gives the account a new salt, so
    the next ``gettoken`` (or the admin) answers a fresh token (that is how it is rotated).
    """
    token = ApiToken.objects.for_account(account).filter(pk=token_id).first()
    if token is None:
        raise TokenNotFound(token_id)
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked and token.kind in _DERIVED:
            _new_salt(account, _DERIVED[token.kind])


def authenticate_token(secret: str) -> ApiToken | None:
    """Find the live token with this secret, or None. Records its last use, coarsely.

    The hash lookup is an indexed equality on a value an attacker cannot steer, so it leaks
    nothing useful through timing. last_used_at is written at most once per
    TOKEN_LAST_USED_RESOLUTION_SECONDS so a busy client does not write on every request.
    """
    if not secret or len(secret) > 200:
        return None
    # The token and its account in one statement written once (gateway.rows): the ORM's
    # queryset took 0.73 ms a call to build and run, this 0.35.
    token = rows.first_with(
        ApiToken, "account", "t.token_hash = %s AND t.revoked_at IS NULL", [hash_token(secret)]
    )
    if token is None:
        return None
    now = timezone.now()
    resolution = timedelta(seconds=settings.TOKEN_LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is None or now - token.last_used_at >= resolution:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def account_owner(account: Account) -> User | None:
    """The user that stands for the account where one login is shown: its first active
    owner (staff first)."""
    return User.objects.filter(account=account, is_active=True).order_by("-is_staff", "pk").first()


def account_login(account: Account) -> str:
    owner = account_owner(account)
    return owner.email if owner is not None else f"account-{account.pk}"


def change_password(user: User, current: str, new: str, client_ip: str) -> None:
    """Set ``user``'s password after checking the current one (under the login limits) and
    Django's password validators. Raises TooManyFailures, PermissionError (wrong current
    password) or ValidationError."""
    from django.contrib.auth.password_validation import validate_password

    if login_with_limits(user.email, current, client_ip) is None:
        raise PermissionError("The current password is wrong")
    validate_password(new, user)
    user.set_password(new)
    user.save(update_fields=["password"])


def check_password_login(email: str, password: str) -> User | None:
    """The active user with this email and password, or None.

    Django's ModelBackend runs the password hasher even for an unknown email, so a wrong
    email and a wrong password take the same time.
    """
    if not email or not password or len(email) > 254 or len(password) > 4096:
        return None
    user = authenticate(None, email=email.strip(), password=password)
    return user if isinstance(user, User) else None


# Failed attempts (logins for the admin, gettoken, smstosend and device pairing; pairing
# codes): at most FAILURE_LIMIT per subject (an account, a client address) within
# FAILURE_WINDOW_SECONDS, then refused until the window passes.
FAILURE_LIMIT = 10
FAILURE_WINDOW_SECONDS = 15 * 60


class TooManyFailures(Exception):
    pass


class FailureLimiter:
    """Counts failures per subject in fixed windows, reserving each attempt before it runs.

    A subject is refused while its current window and the one before hold FAILURE_LIMIT
    failures together, so no span of one window lets more through. reserve() counts the
    attempt as a failure first (one atomic increment per subject) and only then lets it be
    checked, so attempts made in parallel cannot all pass a check that none has counted
    yet: at most FAILURE_LIMIT run, whatever their number. An attempt that did not fail gives
    its reservation back. Subjects are hashed: cache keys are visible to whoever can read
    Redis. While the cache is unreachable, the counts are kept per process
    (gateway.counters), so the limit still holds in each process.
    """

    def __init__(self, kind: str, *subjects: str) -> None:
        window = int(time.time()) // FAILURE_WINDOW_SECONDS
        hashed = [hashlib.sha256(s.encode()).hexdigest()[:32] for s in subjects]
        self.current = [f"fail:{kind}:{window}:{h}" for h in hashed]
        self.previous = [f"fail:{kind}:{window - 1}:{h}" for h in hashed]
        self._reserved_in: counters.Counters | None = None

    def check(self) -> None:
        """Refuse (TooManyFailures) if a subject is at the limit; reserves nothing."""
        counts, _ = counters.run(lambda store: store.get(self.current + self.previous))
        for now_key, before_key in zip(self.current, self.previous, strict=True):
            if counts.get(now_key, 0) + counts.get(before_key, 0) >= FAILURE_LIMIT:
                raise TooManyFailures()

    def reserve(self) -> None:
        """Count this attempt as a failure now, or refuse it (TooManyFailures), counting
        nothing, if that takes a subject past the limit."""

        def count(store: counters.Counters) -> tuple[list[int], dict[str, int]]:
            # Kept for two windows: the next window still reads this one.
            used = store.increment(self.current, timeout=2 * FAILURE_WINDOW_SECONDS)
            return used, store.get(self.previous)

        (used, before), self._reserved_in = counters.run(count)
        for now_used, before_key in zip(used, self.previous, strict=True):
            if now_used + before.get(before_key, 0) > FAILURE_LIMIT:
                self.release()
                raise TooManyFailures()

    def release(self) -> None:
        """The reserved attempt did not fail: give its count back. Once only."""
        store, self._reserved_in = self._reserved_in, None
        if store is not None:
            counters.run(lambda s: s.decrement(self.current), store)

    def clear_first(self) -> None:
        """The attempt succeeded: give its count back and forget the first subject's
        failures (a correct password resets its account's count)."""
        store = self._reserved_in
        self.release()
        counters.run(lambda s: s.delete([self.current[0], self.previous[0]]), store)

    @contextlib.contextmanager
    def attempt(self, *failures: type[BaseException]) -> Iterator[None]:
        """Reserve an attempt for the block: it stays counted if the block raises one of
        ``failures``, and is given back otherwise."""
        self.reserve()
        try:
            yield
        except failures:
            raise
        except BaseException:
            self.release()
            raise
        self.release()


# Logins that just succeeded, remembered in this process for a short while under a keyed
# digest of the credentials (never the password itself), so that a client presenting its
# password on every request (HTTP Basic: SMSGate's SDKs) does not pay the deliberately slow
# password hash each time. A remembered login holds only while the user is active and its
# stored password hash is the one it was checked against: a password change ends it.
REMEMBER_SECONDS = 300
REMEMBER_MOST = 10_000
_remembered: dict[str, tuple[float, int, str]] = {}  # digest -> (until, user id, hash)


def _remembered_user(digest: str) -> User | None:
    entry = _remembered.get(digest)
    if entry is None:
        return None
    until, user_id, stored = entry
    user = User.objects.select_related("account").filter(pk=user_id, is_active=True).first()
    if until < time.monotonic() or user is None or user.password != stored:
        _remembered.pop(digest, None)
        return None
    return user


def _remember(digest: str, user: User) -> None:
    if len(_remembered) >= REMEMBER_MOST:
        _remembered.clear()
    _remembered[digest] = (time.monotonic() + REMEMBER_SECONDS, user.pk, user.password)


def login_with_limits(email: str, password: str, client_ip: str) -> User | None:
    """check_password_login, refused (TooManyFailures) while the account or the client
    address has failed too often. Every way to present a password (the admin, gettoken,
    smstosend, device pairing) comes here, so they share one count. The attempt is counted
    before the password is checked; refused attempts run no password hash and count
    nothing. A successful login clears the account's count. The same login presented again
    within REMEMBER_SECONDS is accepted without the hash, unless a limit is reached."""
    subject = email.strip().lower()
    limiter = FailureLimiter("login", "email:" + subject, "ip:" + client_ip)
    digest = salted_hmac("gateway.login.remembered", f"{subject}\0{password}").hexdigest()
    if digest in _remembered:
        limiter.check()  # a blocked account or address stays blocked
        remembered = _remembered_user(digest)
        if remembered is not None:
            return remembered
    limiter.reserve()
    try:
        user = check_password_login(email, password)
    except BaseException:
        limiter.release()
        raise
    if user is None:
        return None  # the reserved count stays: this was a failure
    limiter.clear_first()
    _remember(digest, user)
    return user
