"""Tags, contacts and newsletters."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from contacts.models import Contact, ContactEvent, Newsletter, Tag
from devices import pools, wake
from devices.models import Device
from devices.queries import DeviceNotFound, get_device, sim_slots_by_device
from gateway import inputs
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone
from gateway.tasks import enqueue_on_commit
from messaging import lifecycle
from messaging import services as messaging
from messaging.models import Message, Status
from messaging.services import InvalidMessage, check_body

log = logging.getLogger(__name__)


class TagNotFound(Exception):
    pass


class InvalidContact(ValueError):
    pass


def save_tag(account: Account, title: str) -> Tag:
    """The account's tag with this title, created if new. Idempotent by title.

    Clients call savetag at start-up; creating a new tag each time would pile up duplicates.
    """
    title = title.strip()[:150]
    existing = Tag.objects.for_account(account).filter(title=title).order_by("id").first()
    return existing or Tag.objects.create(account=account, title=title)


class ContactNotFound(Exception):
    pass


def rename_tag(account: Account, tag_id: int, title: str) -> Tag:
    """Give one of the account's tags a new title. Raises TagNotFound. Idempotent."""
    if not Tag.objects.for_account(account).filter(pk=tag_id).update(title=title.strip()[:150]):
        raise TagNotFound([tag_id])
    return Tag.objects.get(pk=tag_id)


def delete_tag(account: Account, tag_id: int) -> None:
    """Delete one of the account's tags; its contacts stay. Raises TagNotFound."""
    if not Tag.objects.for_account(account).filter(pk=tag_id).delete()[0]:
        raise TagNotFound([tag_id])


def _account_tags(account: Account, tag_ids: Iterable[int]) -> list[Tag]:
    wanted = set(tag_ids)
    tags = list(Tag.objects.for_account(account).filter(pk__in=wanted))
    if len(tags) != len(wanted):
        raise TagNotFound(sorted(wanted - {t.pk for t in tags}))
    return tags


def save_contact(
    account: Account, phone: str, *, name: str = "", tag_ids: Iterable[int] = ()
) -> Contact:
    """Create or update the account's contact with this phone number and add it to tags.

    A contact is unique per account by normalized number: saving it again updates its name
    (when one is given) and adds the tags. Idempotent.
    """
    try:
        normalized = normalize_phone(phone)
    except InvalidPhone as exc:
        raise InvalidContact(str(exc)) from None
    tags = _account_tags(account, tag_ids)
    with transaction.atomic():
        try:
            with transaction.atomic():
                contact, created = Contact.objects.get_or_create(
                    account=account, phone=normalized, defaults={"name": name.strip()[:150]}
                )
        except IntegrityError:  # a concurrent save of the same number won
            contact, created = Contact.objects.get(account=account, phone=normalized), False
        if not created and name.strip() and contact.name != name.strip()[:150]:
            contact.name = name.strip()[:150]
            contact.save(update_fields=["name"])
        if tags:
            contact.tags.add(*tags)
    return contact


def update_contact(
    account: Account,
    contact_id: int,
    *,
    name: str | None = None,
    opted_out: bool | None = None,
    tag_ids: Iterable[int] | None = None,
    reason: str = "changed by the operator",
) -> Contact:
    """Change one of the account's contacts: its name, its consent (recorded in its history
    with ``reason``), its tags (replaced). Its number does not change: a new number is a new
    contact. Raises ContactNotFound or TagNotFound; nothing changes then. Idempotent."""
    contact = Contact.objects.for_account(account).filter(pk=contact_id).first()
    if contact is None:
        raise ContactNotFound(contact_id)
    tags = _account_tags(account, tag_ids) if tag_ids is not None else None
    with transaction.atomic():
        if name is not None and name.strip()[:150] != contact.name:
            contact.name = name.strip()[:150]
            contact.save(update_fields=["name"])
        if opted_out is not None and opted_out != contact.opted_out:
            set_opt_out(contact, opted_out, reason=reason)
        if tags is not None:
            contact.tags.set(tags)
    return Contact.objects.get(pk=contact.pk)


def delete_contact(account: Account, contact_id: int) -> None:
    """Delete one of the account's contacts and its history. Raises ContactNotFound."""
    if not Contact.objects.for_account(account).filter(pk=contact_id).delete()[0]:
        raise ContactNotFound(contact_id)


def check_sender(account: Account, device_id: int, sim: int) -> Device:
    """The account's device that a newsletter would send from, if it has the SIM slot, or
    the handle of the account's pool with that id (the pool picks each message's SIM).

    Raises DeviceNotFound, or InvalidMessage on the ``sim`` field. Reads only.
    """
    pool = pools.pools_by_id(account, [device_id]).get(device_id)
    if pool is not None:  # a pool picks the SIM of each message
        return pool.handle
    device = get_device(account, device_id)
    if sim not in sim_slots_by_device(account, [device.pk]).get(device.pk, set()):
        raise InvalidMessage(f"Device has no SIM slot {sim}", field="sim")
    return device


def create_newsletter(
    account: Account,
    *,
    title: str,
    device_id: int,
    sim: int,
    body: str,
    tag_ids: Iterable[int],
    send_at: datetime | None = None,
) -> Newsletter:
    """Schedule a newsletter to every contact in the tags, sent from one device and SIM.

    Validates like a single SMS (device, SIM slot, body); the messages are written when it
    falls due. Not idempotent: each call schedules a new newsletter.
    """
    device = check_sender(account, device_id, sim)
    check_body(body)
    tag_ids = list(tag_ids)
    if not tag_ids:
        raise TagNotFound([])
    tags = _account_tags(account, tag_ids)
    with transaction.atomic():
        newsletter = Newsletter.objects.create(
            account=account,
            title=title.strip()[:150],
            device=device,
            sim=sim,
            body=body,
            send_at=max(send_at or timezone.now(), timezone.now()),
        )
        newsletter.tags.set(tags)
        if newsletter.send_at <= timezone.now():
            enqueue_on_commit("contacts.tasks.fan_out_newsletter", newsletter.pk)
    log.info("account %s: newsletter %s scheduled", account.pk, newsletter.pk)
    return newsletter


_CHANGEABLE = ("title", "device_id", "sim", "body", "send_at")


def update_newsletter(
    account: Account, newsletter_id: int, *, tag_ids: Iterable[int] | None = None, **changes: Any
) -> Newsletter:
    """Change what a scheduled newsletter sends and when (title, device_id, sim, body,
    send_at, tags), checked like a new one. Only while it is scheduled: otherwise
    IllegalNewsletterChange, and nothing changes. Raises NewsletterNotFound,
    DeviceNotFound, InvalidMessage (naming the field) or TagNotFound. Idempotent."""
    unknown = set(changes) - set(_CHANGEABLE)
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    newsletter = _newsletter(account, newsletter_id)
    if "device_id" in changes or "sim" in changes:
        device_id = changes.get("device_id", newsletter.device_id)
        if device_id is None:  # its device was deleted, and no other is given
            raise DeviceNotFound(device_id)
        check_sender(account, device_id, changes.get("sim", newsletter.sim))
    if "body" in changes:
        check_body(changes["body"])
    if "title" in changes:
        changes["title"] = changes["title"].strip()[:150]
    if changes.get("send_at") is not None:
        changes["send_at"] = max(changes["send_at"], timezone.now())
    elif "send_at" in changes:
        changes["send_at"] = timezone.now()
    tags = _account_tags(account, tag_ids) if tag_ids is not None else None
    if tags is not None and not tags:
        raise TagNotFound([])
    with transaction.atomic():
        # Compare-and-set on the state: a fan-out that started meanwhile wins.
        scheduled = Newsletter.objects.filter(pk=newsletter.pk, state=Newsletter.State.SCHEDULED)
        if not (scheduled.update(**changes) if changes else scheduled.exists()):
            raise IllegalNewsletterChange("Only a scheduled newsletter can be changed")
        if tags is not None:
            newsletter.tags.set(tags)
        newsletter = Newsletter.objects.get(pk=newsletter.pk)
        if newsletter.send_at <= timezone.now():
            enqueue_on_commit("contacts.tasks.fan_out_newsletter", newsletter.pk)
    return newsletter


def delete_newsletter(account: Account, newsletter_id: int) -> None:
    """Delete a newsletter that never went out (never fanned out, and scheduled, paused or
    cancelled); one that did is cancelled instead, so its history stays. Raises
    NewsletterNotFound or IllegalNewsletterChange."""
    deleted = (
        Newsletter.objects.for_account(account)
        .filter(
            pk=newsletter_id,
            fanned_out_at__isnull=True,
            state__in=[
                Newsletter.State.SCHEDULED,
                Newsletter.State.PAUSED,
                Newsletter.State.CANCELLED,
            ],
        )
        .delete()[0]
    )
    if not deleted:
        _newsletter(account, newsletter_id)
        raise IllegalNewsletterChange("This newsletter was sent; cancel it instead of deleting it")


class NewsletterNotFound(Exception):
    pass


def _newsletter(account: Account, newsletter_id: int) -> Newsletter:
    newsletter = Newsletter.objects.for_account(account).filter(pk=newsletter_id).first()
    if newsletter is None:
        raise NewsletterNotFound(newsletter_id)
    return newsletter


# --- Newsletter fan-out and states ----------------------------------------------------------


def recipients(newsletter: Newsletter) -> Any:
    """The contacts a newsletter goes to: in any of its tags, not opted out."""
    return Contact.objects.filter(
        account_id=newsletter.account_id,
        opted_out=False,
        tags__in=newsletter.tags.all(),
    ).distinct()


# The contacts a newsletter goes to, as SQL for the fan-out's INSERT ... SELECT (the same
# set as recipients(), written so that PostgreSQL reads each contact once).
_RECIPIENTS_SQL = """
SELECT c.phone FROM contacts_contact c
WHERE c.account_id = %s
  AND c.opted_out = %s
  AND EXISTS (
      SELECT 1 FROM contacts_contact_tags ct
      JOIN contacts_newsletter_tags nt ON nt.tag_id = ct.tag_id
      WHERE ct.contact_id = c.id AND nt.newsletter_id = %s
  )
"""


def fan_out(newsletter_id: int, *, now: datetime | None = None) -> int:
    """Write one NEW message per recipient of a due, scheduled newsletter; idempotent.

    One INSERT ... SELECT in one transaction, no per-contact Python: all or nothing, so a
    worker killed half-way leaves no partial newsletter, and a repeated run finds the state
    already "sending" (and the unique (newsletter, phone) constraint would drop duplicates
    anyway). A newsletter that is not scheduled, or not yet due, is left alone. Returns the
    number of messages written.
    """
    now = now or timezone.now()
    with transaction.atomic():
        newsletter = (
            Newsletter.objects.select_for_update()
            .filter(pk=newsletter_id, state=Newsletter.State.SCHEDULED, send_at__lte=now)
            .first()
        )
        if newsletter is None:
            return 0
        if newsletter.device_id is None:
            Newsletter.objects.filter(pk=newsletter.pk).update(state=Newsletter.State.CANCELLED)
            log.warning("newsletter %s cancelled: its device was deleted", newsletter.pk)
            return 0
        written = messaging.store_newsletter(
            newsletter, (_RECIPIENTS_SQL, [newsletter.account_id, False, newsletter.pk])
        )
        # A scheduled newsletter has no message yet (it only returns to scheduled when
        # resumed before its fan-out), so what was written is all it has.
        Newsletter.objects.filter(pk=newsletter.pk).update(
            state=Newsletter.State.SENDING, fanned_out_at=now, queued_count=written
        )
        device_id = newsletter.device_id
        transaction.on_commit(lambda: wake.ring([device_id]))
    log.info("newsletter %s: %d messages written", newsletter_id, written)
    return written


def due_newsletters(now: datetime | None = None, limit: int = 100) -> list[int]:
    return list(
        Newsletter.objects.filter(
            state=Newsletter.State.SCHEDULED, send_at__lte=now or timezone.now()
        )
        .order_by("send_at")
        .values_list("pk", flat=True)[:limit]
    )


class IllegalNewsletterChange(Exception):
    pass


_PAUSABLE = (Newsletter.State.SCHEDULED, Newsletter.State.SENDING)


def pause_newsletter(account: Account, newsletter_id: int) -> None:
    """Hold a newsletter: none of its messages is handed to a phone until it resumes.

    Messages already confirmed by the phone still go out. Pausing a paused one is harmless.
    """
    updated = (
        Newsletter.objects.for_account(account)
        .filter(pk=newsletter_id, state__in=_PAUSABLE)
        .update(state=Newsletter.State.PAUSED)
    )
    if (
        not updated
        and not Newsletter.objects.for_account(account)
        .filter(pk=newsletter_id, state=Newsletter.State.PAUSED)
        .exists()
    ):
        raise IllegalNewsletterChange("Only a scheduled or sending newsletter can be paused")


def resume_newsletter(account: Account, newsletter_id: int) -> None:
    """Continue a paused newsletter where it was (scheduled, or sending)."""
    paused = Newsletter.objects.for_account(account).filter(
        pk=newsletter_id, state=Newsletter.State.PAUSED
    )
    if not (
        paused.filter(fanned_out_at__isnull=False).update(state=Newsletter.State.SENDING)
        or paused.update(state=Newsletter.State.SCHEDULED)
    ):
        raise IllegalNewsletterChange("Only a paused newsletter can be resumed")
    device_ids = Newsletter.objects.filter(pk=newsletter_id).values_list("device_id", flat=True)
    transaction.on_commit(lambda: wake.ring([d for d in device_ids if d]))


def cancel_newsletter(account: Account, newsletter_id: int) -> int:
    """Stop a newsletter for good; its messages no phone has confirmed are cancelled.

    Returns how many messages were cancelled. Cancelling again changes nothing.
    """
    with transaction.atomic():
        stoppable = [*_PAUSABLE, Newsletter.State.PAUSED]
        updated = (
            Newsletter.objects.for_account(account)
            .filter(pk=newsletter_id, state__in=stoppable)
            .update(state=Newsletter.State.CANCELLED)
        )
        if not updated:
            if (
                Newsletter.objects.for_account(account)
                .filter(pk=newsletter_id, state=Newsletter.State.CANCELLED)
                .exists()
            ):
                return 0
            raise IllegalNewsletterChange("Only an unfinished newsletter can be cancelled")
        pending = Message.objects.filter(
            newsletter_id=newsletter_id, status__in=[Status.NEW, Status.TAKEN]
        ).values_list("id", flat=True)
        return len(
            lifecycle.cancel_unconfirmed(
                list(pending), account=account, source=f"newsletter {newsletter_id} cancelled"
            )
        )


def finish_newsletters(limit: int = 100) -> int:
    """Newsletters that are sending and have no message left in the queue or with a phone
    become done. Bounded; idempotent."""
    in_flight = Message.objects.filter(
        newsletter_id=OuterRef("pk"), status__in=[Status.NEW, Status.TAKEN]
    )
    finished = list(
        Newsletter.objects.filter(state=Newsletter.State.SENDING)
        .filter(~Exists(in_flight))
        .values_list("pk", flat=True)[:limit]
    )
    return Newsletter.objects.filter(pk__in=finished, state=Newsletter.State.SENDING).update(
        state=Newsletter.State.DONE
    )


# --- Opt-out keywords -----------------------------------------------------------------------


def _keyword(body: str) -> str:
    words = re.findall(r"[^\W\d_]+", body.upper())
    return words[0] if words else ""


def apply_keywords(account_id: int, messages: list[tuple[int, str, str]]) -> int:
    """Opt contacts out of (or back into) newsletters when they text a keyword.

    ``messages``: (message id, sender's number, body) of newly received SMS. The first word
    decides (OPT_OUT_KEYWORDS / OPT_IN_KEYWORDS, any case); each change is recorded in the
    contact's history with the message that caused it. Returns how many contacts changed.
    """
    changed = 0
    for message_id, phone, body in messages:
        word = _keyword(body)
        if word in settings.OPT_OUT_KEYWORDS:
            opted_out, kind = True, ContactEvent.Kind.OPTED_OUT
        elif word in settings.OPT_IN_KEYWORDS:
            opted_out, kind = False, ContactEvent.Kind.OPTED_IN
        else:
            continue
        with transaction.atomic():
            contacts = Contact.objects.select_for_update().filter(
                account_id=account_id, phone=phone, opted_out=not opted_out
            )
            for contact in contacts:
                contact.opted_out = opted_out
                contact.opted_out_at = timezone.now() if opted_out else None
                contact.save(update_fields=["opted_out", "opted_out_at"])
                ContactEvent.objects.create(
                    contact=contact,
                    kind=kind,
                    reason=f"texted {word!r}",
                    message_id=message_id,
                )
                changed += 1
    return changed


def start_newsletter(account: Account, newsletter_id: int) -> None:
    """Send a scheduled newsletter now instead of at its time."""
    updated = (
        Newsletter.objects.for_account(account)
        .filter(pk=newsletter_id, state=Newsletter.State.SCHEDULED)
        .update(send_at=timezone.now())
    )
    if not updated:
        raise IllegalNewsletterChange("Only a scheduled newsletter can be started")
    enqueue_on_commit("contacts.tasks.fan_out_newsletter", newsletter_id)


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    # Rows whose number an earlier row of the same file already had: (line, what happened).
    duplicates: list[tuple[int, str]] = field(default_factory=list)


MAX_IMPORT_ROWS = 50_000
MAX_TAGS_PER_ROW = 100


class InvalidImport(ValueError):
    """The file cannot be read as a contact list; the message says why, for the user."""


@dataclass(frozen=True)
class UnreadableRow:
    """A row of a file that could not be read (reported as that row's error)."""

    problem: str


def import_csv(account: Account, file: Any) -> ImportResult:
    """Import a CSV file (binary, UTF-8, a header row naming at least ``phone``).

    A header that cannot be read or names no ``phone`` column raises InvalidImport and
    imports nothing; a row the CSV reader cannot read (a field over the reader's 128 KB
    limit, say) is that row's error, and the rows after it are still imported.
    """
    text = io.TextIOWrapper(file, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidImport("The file is empty") from None
    except csv.Error as exc:
        raise InvalidImport(f"The first row cannot be read: {exc}") from None
    names = [name.strip().lower() for name in header]
    if "phone" not in names:
        raise InvalidImport("The first row must name the columns, with at least 'phone'")
    return import_contacts(account, _csv_rows(reader, names))


def _csv_rows(reader: Any, names: list[str]) -> Iterator[dict[str, str] | UnreadableRow]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield UnreadableRow(f"the row cannot be read: {exc}")
            continue
        if row:  # a blank line is no row
            yield dict(zip(names, row, strict=False))


def import_contacts(
    account: Account, rows: Iterable[dict[str, str] | UnreadableRow]
) -> ImportResult:
    """Create or update contacts from rows with ``phone``, ``name`` and ``tags`` (tag titles
    separated by ``;`` or ``|``, created when new). Phones are normalized, so the same number
    written twice is one contact (its tags merged, the later name kept); each such repeat is
    reported in ``duplicates`` with the line that had the number first. A bad row
    (unreadable, a value with a NUL character, more than MAX_TAGS_PER_ROW tags) is reported
    by its line number (the header is line 1) and does not stop the others. Idempotent.
    """
    result = ImportResult()
    tag_ids: dict[str, int] = {}
    first_line: dict[str, int] = {}  # normalized number -> the line that had it first
    for line, row in enumerate(rows, start=2):
        if line - 1 > MAX_IMPORT_ROWS:
            result.errors.append((line, f"more than {MAX_IMPORT_ROWS} rows; the rest was skipped"))
            break
        if isinstance(row, UnreadableRow):
            result.errors.append((line, row.problem))
            continue
        problem = _row_problem(row)
        if problem:
            result.errors.append((line, problem))
            continue
        phone = (row.get("phone") or "").strip()
        if not phone:
            result.errors.append((line, "phone is empty"))
            continue
        titles = [t.strip() for t in re.split(r"[;|]", row.get("tags") or "") if t.strip()]
        if len(titles) > MAX_TAGS_PER_ROW:
            result.errors.append((line, f"more than {MAX_TAGS_PER_ROW} tags"))
            continue
        for title in titles:
            if title not in tag_ids:
                tag_ids[title] = save_tag(account, title).pk
        existed = (
            Contact.objects.for_account(account).filter(phone=_normalized_or_raw(phone)).exists()
        )
        try:
            save_contact(
                account, phone, name=row.get("name") or "", tag_ids=[tag_ids[t] for t in titles]
            )
        except InvalidContact as exc:
            result.errors.append((line, f"{phone}: {exc}"))
            continue
        number = _normalized_or_raw(phone)
        if number in first_line:
            earlier = first_line[number]
            result.duplicates.append(
                (line, f"{number} is also on line {earlier}: tags merged, this line's name kept")
            )
        else:
            first_line[number] = line
        if existed:
            result.updated += 1
        else:
            result.created += 1
    return result


def _row_problem(row: dict[str, str]) -> str:
    for column in ("phone", "name", "tags"):
        try:
            inputs.check_text(row.get(column) or "", column)
        except inputs.InvalidInput as exc:
            return str(exc)
    return ""


def _normalized_or_raw(phone: str) -> str:
    try:
        return normalize_phone(phone)
    except InvalidPhone:
        return phone


def set_opt_out(contact: Contact, opted_out: bool, *, reason: str) -> None:
    """Opt a contact out of newsletters (or back in) by hand, recorded in its history."""
    with transaction.atomic():
        changed = Contact.objects.filter(pk=contact.pk, opted_out=not opted_out).update(
            opted_out=opted_out, opted_out_at=timezone.now() if opted_out else None
        )
        if changed:
            ContactEvent.objects.create(
                contact=contact,
                kind=ContactEvent.Kind.OPTED_OUT if opted_out else ContactEvent.Kind.OPTED_IN,
                reason=reason[:200],
            )
