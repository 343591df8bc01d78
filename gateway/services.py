"""Accounts and tokens: the only code that creates, derives, checks or revokes a token."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from gateway import counters
from gateway.models import Account, ApiToken, User

log = logging.getLogger(__name__)

API_TOKEN_PREFIX = "sgw_"  # noqa: S105 (a label, not a secret)


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


def _derive_compat_token(account: Account) -> str:
    # 128 bits as 32 lower-case hex characters: the shape SMSGateway24 clients know.
    return salted_hmac(
        "gateway.compat-token", account.compat_token_salt, algorithm="sha256"
    ).hexdigest()[:32]


def compat_token(account: Account) -> str:
    """Return the account's SMSGateway24 token: the same value on every call until revoked.

    The token is derived from the server secret and the account's salt, so the database
    holds only its hash. The first call (or the first after a salt or SECRET_KEY change)
    registers the hash and revokes any previous compatibility token. When the derived
    token was revoked (REST or admin revoke), the account gets a new salt and so a fresh
    token: a revoked token is never handed out again. Idempotent otherwise.
    """
    secret = _derive_compat_token(account)
    if ApiToken.objects.filter(token_hash=hash_token(secret), revoked_at__isnull=True).exists():
        return secret
    try:
        with transaction.atomic():
            # One writer per account: concurrent first calls agree on one salt and token.
            locked = Account.objects.select_for_update().get(pk=account.pk)
            account.compat_token_salt = locked.compat_token_salt
            secret = _derive_compat_token(account)
            known = list(
                ApiToken.objects.filter(token_hash=hash_token(secret)).values_list(
                    "revoked_at", flat=True
                )
            )
            if known and known[0] is None:
                return secret  # registered meanwhile
            if known:
                _new_compat_salt(account)
                secret = _derive_compat_token(account)
            ApiToken.objects.filter(
                account=account, kind=ApiToken.Kind.COMPAT, revoked_at__isnull=True
            ).update(revoked_at=timezone.now())
            ApiToken.objects.create(
                account=account,
                name="SMSGateway24 compatibility token",
                kind=ApiToken.Kind.COMPAT,
                token_hash=hash_token(secret),
                prefix=secret[:8],
            )
    except IntegrityError:
        # SQLite has no row lock: a concurrent first call registered the same hash.
        pass
    return secret


def _new_compat_salt(account: Account) -> None:
    account.compat_token_salt = secrets.token_hex(16)
    Account.objects.filter(pk=account.pk).update(compat_token_salt=account.compat_token_salt)


def revoke_token(account: Account, token_id: int) -> None:
    """Revoke one of the account's tokens. Revoking a revoked token changes nothing.

    Revoking the compatibility token also gives the account a new salt, so the next
    ``gettoken`` answers a fresh token (that is how it is rotated).
    """
    token = ApiToken.objects.for_account(account).filter(pk=token_id).first()
    if token is None:
        raise TokenNotFound(token_id)
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked and token.kind == ApiToken.Kind.COMPAT:
            _new_compat_salt(account)


def authenticate_token(secret: str) -> ApiToken | None:
    """Find the live token with this secret, or None. Records its last use, coarsely.

    The hash lookup is an indexed equality on a value an attacker cannot steer, so it leaks
    nothing useful through timing. last_used_at is written at most once per
    TOKEN_LAST_USED_RESOLUTION_SECONDS so a busy client does not write on every request.
    """
    if not secret or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.select_related("account")
        .filter(token_hash=hash_token(secret), revoked_at__isnull=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    resolution = timedelta(seconds=settings.TOKEN_LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is None or now - token.last_used_at >= resolution:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


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


def login_with_limits(email: str, password: str, client_ip: str) -> User | None:
    """check_password_login, refused (TooManyFailures) while the account or the client
    address has failed too often. Every way to present a password (the admin, gettoken,
    smstosend, device pairing) comes here, so they share one count. The attempt is counted
    before the password is checked; refused attempts run no password hash and count
    nothing. A successful login clears the account's count."""
    limiter = FailureLimiter("login", "email:" + email.strip().lower(), "ip:" + client_ip)
    limiter.reserve()
    try:
        user = check_password_login(email, password)
    except BaseException:
        limiter.release()
        raise
    if user is None:
        return None  # the reserved count stays: this was a failure
    limiter.clear_first()
    return user
