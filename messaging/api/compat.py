"""The SMSGateway24-compatible API: ``/getdata/<method>``.

Each handler reads the parameter bag (``compat_wire``), calls one service and renders the
answer in the exact shape of the spec's samples. Errors of any kind are HTTP 200 with
``{"error":1,"message":...}``, because that is what every client in the field parses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from contacts import services as contacts
from devices import pools
from devices import queries as devices
from gateway import outage
from gateway import services as accounts
from gateway.clients import client_address
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone
from messaging import services as messaging
from messaging.api.compat_wire import (
    MAX_BODY_BYTES,
    MAX_BULK_BODY_BYTES,
    CompatError,
    Params,
    answer,
    error,
    human_datetime,
    load_json,
    parameters,
    parse_int,
    parse_time,
    parse_zone,
    php_datetime,
    php_local,
)
from messaging.models import Status

log = logging.getLogger(__name__)

SAVED = "Sms has been saved successfully"
BAD_LOGIN = "Login or password incorrect"
# sim values 2-5 select other channels on the hosted service (spec §4).
CHANNELS = {2: "WhatsApp Business", 3: "WhatsApp Personal", 4: "RCS channel 1", 5: "RCS channel 2"}
MAX_SIM_SLOT = 1


class Call:
    """One API call: the request, its parameters and, once authenticated, the account."""

    def __init__(self, request: HttpRequest, bag: dict[str, Any]) -> None:
        self.request = request
        self.params = Params(bag)
        self._account: Account | None = None

    @property
    def account(self) -> Account:
        if self._account is None:
            token = self.params.text("token", max_length=200).strip()
            if not token:
                raise CompatError("Token is required")
            found = accounts.authenticate_token(token)
            if found is None:
                raise CompatError("Token is invalid")
            self._account = found.account
        return self._account

    def login(self) -> Account:
        """The account of the email + pass in the request (gettoken, smstosend)."""
        email = self.params.text("email", max_length=254)
        password = self.params.text("pass", max_length=4096)
        try:
            user = accounts.login_with_limits(email, password, client_address(self.request))
        except accounts.TooManyFailures:
            raise CompatError("Too many failed logins; try again in 15 minutes") from None
        if user is None:
            raise CompatError(BAD_LOGIN)
        self._account = user.account
        return user.account

    def zone(self) -> ZoneInfo:
        """Dates are rendered in the request's `timezone`, else the account's."""
        return parse_zone(self.params.raw("timezone")) or ZoneInfo(self.account.time_zone)

    def input_zone(self) -> ZoneInfo:
        """Times a client sends without an offset are server time (UTC), as on the hosted
        service (spec §1.6), unless the request names its `timezone`."""
        return parse_zone(self.params.raw("timezone")) or ZoneInfo("UTC")


# --- Sending ------------------------------------------------------------------------------


def _sim(value: Any) -> int:
    sim = parse_int(value, "sim")
    if sim is None:
        return 0
    if sim in CHANNELS:
        raise CompatError(
            f"sim={sim} selects {CHANNELS[sim]} on the hosted service; this gateway sends SMS "
            "from the phone's SIM cards only (sim=0 or sim=1)"
        )
    if not 0 <= sim <= MAX_SIM_SLOT:
        raise CompatError("sim must be 0 (SIM slot 1) or 1 (SIM slot 2)")
    return sim


def _outgoing(
    item: Params, zone: ZoneInfo, *, default_customer: int | None
) -> messaging.OutgoingSms:
    device_id = item.integer("device_id", required=True)
    assert device_id is not None
    customer = item.integer("customerid", "customerId")
    return messaging.OutgoingSms(
        device_id=device_id,
        phone=item.text("sendto", "send_to", required=True, max_length=20_000),
        body=item.text("body", required=True, max_length=messaging.MAX_BODY_CHARS * 4),
        sim=_sim(item.raw("sim")),
        send_at=parse_time(item.raw("timetosend"), "timetosend", zone, schedule=True),
        urgent=item.flag("urgent"),
        customer_id=default_customer if customer is None else customer,
    )


def _submit_one(call: Call, account: Account) -> HttpResponse:
    request = _outgoing(call.params, call.input_zone(), default_customer=None)
    try:
        ids = messaging.submit(account, [request])
    except messaging.InvalidBatch as exc:
        raise CompatError(exc.errors[0][1]) from None
    return answer({"error": 0, "sms_id": ids[0], "message": SAVED, "sms_ids": ids})


def addsms(call: Call) -> HttpResponse:
    return _submit_one(call, call.account)


def smstosend(call: Call) -> HttpResponse:
    return _submit_one(call, call.login())


def addalotofsms(call: Call) -> HttpResponse:
    bag = call.params.bag
    data: Any = bag
    if "datajson" in bag:
        raw = bag["datajson"]
        if isinstance(raw, str):
            try:
                data = load_json(raw, "datajson")
            except ValueError as exc:
                raise CompatError(f"datajson is not valid JSON: {exc}") from None
        else:
            data = raw
        if not isinstance(data, dict):
            raise CompatError('datajson must be a JSON object {"token":...,"smsdata":[...]}')
        if not call.params.raw("token") and data.get("token") is not None:
            call.params.bag = {**bag, "token": data["token"]}
    items = data.get("smsdata")
    if items is None:
        raise CompatError("smsdata is required: a list of SMS objects")
    if not isinstance(items, list):
        raise CompatError("smsdata must be a list of SMS objects")
    if not items:
        raise CompatError("smsdata is empty")
    if len(items) > messaging.MAX_BATCH:
        raise CompatError(f"At most {messaging.MAX_BATCH} SMS per request; got {len(items)}")
    account = call.account
    zone = call.input_zone()
    requests: list[messaging.OutgoingSms] = []
    positions: list[int] = []  # item index of each parsed request
    errors: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append((index, "must be an object"))
            continue
        try:
            # Bulk items without a customer id are stored with 0, as the hosted service does.
            requests.append(_outgoing(Params(item), zone, default_customer=0))
            positions.append(index)
        except CompatError as exc:
            errors.append((index, str(exc)))
    try:
        batch = messaging.prepare(account, requests)
    except messaging.InvalidBatch as exc:
        errors += [(positions[i], message) for i, message in exc.errors]
    if errors:
        errors.sort()
        return error(
            f"Nothing was saved: {messaging.InvalidBatch(errors)}",
            errors=[{"index": i, "message": m} for i, m in errors[:100]],
        )
    messaging.store(account, batch, return_ids=False)
    return answer({"error": 0, "message": SAVED})


def addsmstosenderid(call: Call) -> HttpResponse:
    raise CompatError(
        "Sender IDs are not available on a phone gateway: SMS go out from the phone's own "
        "SIM number. Use addsms with a device_id."
    )


# --- Reading messages ---------------------------------------------------------------------


def getsmsstatus(call: Call) -> HttpResponse:
    sms_id = call.params.integer("sms_id", required=True)
    assert sms_id is not None
    try:
        message = messaging.get_message(call.account, sms_id)
    except messaging.MessageNotFound:
        raise CompatError("Sms not found") from None
    status = Status(message.status)
    return answer(
        {
            "error": 0,
            "sms_id": message.pk,
            "status": status.value,
            "status_description": status.label,
            "message": "Ok",
        }
    )


def getallsms(call: Call) -> HttpResponse:
    params = call.params
    account = call.account
    input_zone = call.input_zone()
    phone = params.text("phone", max_length=64)
    if phone.strip():
        try:
            phone = normalize_phone(phone)
        except InvalidPhone as exc:
            raise CompatError(f"phone: {exc}") from None
    query = messaging.MessageFilter(
        device_id=params.integer("device_id"),
        status=params.integer("status"),
        created_from=parse_time(params.raw("begindate"), "begindate", input_zone),
        created_to=parse_time(params.raw("enddate"), "enddate", input_zone, end_of_day=True),
        sim=params.integer("sim"),
        customer_id=params.integer("customerid", "customerId"),
        phone=phone or None,
    )
    if params.flag("onlycount"):
        return answer(
            {"error": 0, "count": messaging.count_messages(account, query), "message": "Ok"}
        )
    zone = call.zone()
    limit = params.integer(
        "limit", default=messaging.MAX_PAGE, minimum=1, maximum=messaging.MAX_PAGE
    )
    newest_first = params.flag("orderbydesc")
    rows, more = messaging.list_messages(
        account,
        query,
        limit=limit or messaging.MAX_PAGE,
        after_id=params.integer("after_id", minimum=0),
        newest_first=newest_first,
        local_times=zone,
    )
    smss = _sms_items(rows, zone)
    payload: dict[str, Any] = {"error": 0, "smss": smss, "count": len(rows), "message": "Ok"}
    if more:
        # Not in the hosted API: how to fetch the rest (docs/compat-api.md).
        payload["more"] = True
        payload["next_after_id"] = rows[-1][0]
    return answer(payload)


# The word getallsms shows beside a status (Status(value).short_title per row is slow).
_STATUS_TITLES = {status.value: status.short_title for status in Status}


def _sms_items(rows: list[tuple[Any, ...]], zone: ZoneInfo) -> dict[str, dict[str, Any]]:
    """getallsms' ``smss``: list_messages' rows (LISTED_FIELDS, times local) by id."""
    smss = {}
    for (sms_id, phone, body, customer_id, status, device_id, urgent, sim, newsletter_id,
         newsletter_title, newsletter_body, created, sent, send_at) in rows:  # fmt: skip
        smss[str(sms_id)] = {
            "id": sms_id,
            "sendto": phone,
            "body": body,
            "customerid": customer_id,
            "status": status,
            "statustitle": _STATUS_TITLES[status],
            "deviceid": device_id,
            "urgent": True if urgent else None,
            "created": php_local(created, zone),
            "senttime": php_local(sent, zone),
            "timetosend": php_local(send_at, zone),
            "sim": sim,
            "paketid": newsletter_id,
            "pakettitle": newsletter_title,
            "paketbody": newsletter_body,
        }
    return smss


# --- Devices ------------------------------------------------------------------------------


def getdevicestatus(call: Call) -> HttpResponse:
    device_id = call.params.integer("device_id", required=True)
    assert device_id is not None
    now = timezone.now()
    found = pools.pools_by_id(call.account, [device_id])
    if found:
        (state,) = pools.status(list(found.values()), now)
        seen = state.last_seen_at or state.pool.created_at
        return answer(
            {
                "online": state.online,
                "error": 0,
                "message": "OK",
                "device_id": state.pool.pk,
                "lastseen": php_datetime(seen, call.zone()),
                "diffseconds": max(0, int((now - seen).total_seconds())),
                "title": state.pool.name,
            }
        )
    try:
        device = devices.get_device(call.account, device_id)
    except devices.DeviceNotFound:
        raise CompatError("Device not found") from None
    # A device never seen reports its creation time, never null (PHPSDK needs an object).
    last_seen: datetime = device.last_seen_at or device.created_at
    return answer(
        {
            "online": devices.is_online(device, now),
            "error": 0,
            "message": "OK",
            "device_id": device.pk,
            "lastseen": php_datetime(last_seen, call.zone()),
            "diffseconds": max(0, int((now - last_seen).total_seconds())),
            "title": device.title or "",
        }
    )


def getalldevices(call: Call) -> HttpResponse:
    zone = call.zone()
    found = devices.list_devices(call.account)
    listed = {}
    for device in found:
        last_seen = device.last_seen_at or device.created_at
        listed[str(device.pk)] = {
            "id": device.pk,
            "title": device.title or "",
            "number": device.number or None,
            "imei": device.imei,
            "created": php_datetime(device.created_at, zone),
            "createdhumanformat": human_datetime(device.created_at, zone),
            "lastseen": php_datetime(last_seen, zone),
            "lastseenhumanformat": human_datetime(last_seen, zone),
            "serialnumber": device.serial_number,
            "siminfo": [
                {
                    "Slot": str(sim.slot),
                    "IccId": sim.iccid,
                    "Number": sim.number,
                    "Roaming": "1" if sim.roaming else "0",
                    "CountryIso": sim.country_iso,
                    "CarrierName": sim.carrier_name,
                }
                for sim in device.sims.all()
            ],
            "appversion": device.app_version,
            "isappversionactual": devices.is_app_version_current(device),
            "delaybetweeneachsms": device.delay_between_sms,
            "delaybetweenrequest": device.delay_between_requests,
            # No subscriptions on a self-hosted gateway: every device has every feature.
            "subscription": True,
        }
        if device.battery_percent is not None:
            # Ours, after the hosted service's keys, only for phones that report health
            # (docs/compat-api.md): battery, charging, and the app's own verdict.
            listed[str(device.pk)].update(
                battery=device.battery_percent,
                charging=device.charging,
                health=(device.health or {}).get("status") or None,
            )
    # Pools, as devices (docs/pools.md): one entry per member SIM in siminfo, its Slot the
    # position in the pool (the pool picks the SIM: addsms to a pool ignores sim).
    states = pools.status(pools.account_pools(call.account))
    for state in states:
        pool = state.pool
        last_seen = state.last_seen_at or pool.created_at
        phones = [c.device for c in state.members]
        listed[str(pool.pk)] = {
            "id": pool.pk,
            "title": pool.name,
            "number": None,
            "imei": "",
            "created": php_datetime(pool.created_at, zone),
            "createdhumanformat": human_datetime(pool.created_at, zone),
            "lastseen": php_datetime(last_seen, zone),
            "lastseenhumanformat": human_datetime(last_seen, zone),
            "serialnumber": "",
            "siminfo": [
                {
                    "Slot": str(position),
                    "IccId": c.slot.iccid,
                    "Number": c.slot.number,
                    "Roaming": "1" if c.slot.roaming else "0",
                    "CountryIso": c.slot.country_iso,
                    "CarrierName": c.slot.carrier_name,
                }
                for position, c in enumerate(state.members)
            ],
            "appversion": "pool",
            "isappversionactual": True,
            # Each SIM keeps its own phone's pacing; these are the pool's tightest.
            "delaybetweeneachsms": min(
                (p.delay_between_sms for p in phones if p.delay_between_sms is not None),
                default=None,
            ),
            "delaybetweenrequest": min((p.delay_between_requests for p in phones), default=10),
            "subscription": True,
            "pool": True,
        }
    return answer({"count": len(found) + len(states), "device": listed})


# --- Tags, contacts, newsletters ----------------------------------------------------------


def _tag_ids(value: Any) -> list[int]:
    if isinstance(value, list):
        parts = value
    elif value is None:
        parts = []
    else:
        parts = [p for p in str(value).split(",") if p.strip()]
    if len(parts) > 1000:
        raise CompatError("At most 1000 tags")
    return [i for i in (parse_int(p, "tags") for p in parts) if i is not None]


def savetag(call: Call) -> HttpResponse:
    title = call.params.text("title", required=True, max_length=150)
    tag = contacts.save_tag(call.account, title)
    return answer({"error": 0, "message": "Ok", "tag_id": tag.pk})


def savecontact(call: Call) -> HttpResponse:
    params = call.params
    phone = params.text("phone", required=True, max_length=64)
    name = params.text("fullname", "name", max_length=150)
    tag_id = params.integer("tag_id", "ctag_id")
    try:
        contact = contacts.save_contact(
            call.account, phone, name=name, tag_ids=[] if tag_id is None else [tag_id]
        )
    except contacts.InvalidContact as exc:
        raise CompatError(f"phone: {exc}") from None
    except contacts.TagNotFound:
        raise CompatError("Tag not found") from None
    return answer({"error": 0, "message": "Ok", "contact_id": contact.pk})


def savepaket(call: Call) -> HttpResponse:
    params = call.params
    title = params.text("title", required=True, max_length=150)
    device_id = params.integer("device_id", required=True)
    assert device_id is not None
    body = params.text("body", required=True, max_length=messaging.MAX_BODY_CHARS * 4)
    tag_ids = _tag_ids(params.raw("tags"))
    if not tag_ids:
        raise CompatError("tags is required: comma-separated tag ids")
    send_at = parse_time(
        params.raw("time_to_send"), "time_to_send", call.input_zone(), schedule=True
    )
    try:
        newsletter = contacts.create_newsletter(
            call.account,
            title=title,
            device_id=device_id,
            sim=_sim(params.raw("sim")),
            body=body,
            tag_ids=tag_ids,
            send_at=send_at,
        )
    except devices.DeviceNotFound:
        raise CompatError("Device not found") from None
    except contacts.TagNotFound:
        raise CompatError("Tag not found") from None
    except messaging.InvalidMessage as exc:
        raise CompatError(str(exc)) from None
    # paket_id for PHPSDK, paket for the npm client and older SDKs (spec §2.11).
    return answer({"error": 0, "message": "Ok", "paket_id": newsletter.pk, "paket": newsletter.pk})


# --- Accounts -----------------------------------------------------------------------------


def gettoken(call: Call) -> HttpResponse:
    account = call.login()
    return answer({"error": 0, "token": accounts.compat_token(account), "message": "OK"})


METHODS: dict[str, Callable[[Call], HttpResponse]] = {
    "gettoken": gettoken,
    "addsms": addsms,
    "smstosend": smstosend,
    "addalotofsms": addalotofsms,
    "addsmstosenderid": addsmstosenderid,
    "getallsms": getallsms,
    "getsmsstatus": getsmsstatus,
    "getdevicestatus": getdevicestatus,
    "getalldevices": getalldevices,
    "savetag": savetag,
    "savecontact": savecontact,
    "savepaket": savepaket,
}


@csrf_exempt
def getdata(request: HttpRequest, method: str) -> HttpResponse:
    """Every /getdata/<method>, GET or POST, with or without a trailing slash."""
    handler = METHODS.get(method.lower())
    if handler is None:
        return error(f"Unknown method {method[:50]!r}")
    if request.method not in ("GET", "POST"):
        return error("Use GET or POST")
    limit = MAX_BULK_BODY_BYTES if handler is addalotofsms else MAX_BODY_BYTES
    try:
        call = Call(request, parameters(request, max_bytes=limit))
        return handler(call)
    except CompatError as exc:
        return error(str(exc))
    except (RequestDataTooBig, TooManyFieldsSent):
        return error(f"Request is too large: at most {limit // 1024} KB and 1000 form fields")
    except (MultiPartParserError, UnreadablePostError) as exc:
        return error(f"Request body could not be read: {exc}")
    except Exception as exc:
        # Clients read errors only from HTTP 200 bodies (spec §1.5), so even our own failure
        # is answered in that shape: an unreachable database with one log line
        # (gateway.outage), anything else with its traceback in the log.
        if outage.unreachable(exc):
            outage.report(request.method or "", request.path, exc)
            return error(outage.MESSAGE)
        log.exception("getdata/%s failed", method)
        return error("Server error: the request was not completed; please retry")
