#!/usr/bin/env python3
"""Reference device agent for the SMS gateway: pairs a phone or modem and sends its SMS.

One file, Python 3.9+ standard library only. Download it from your server
(GET /api/device/v1/agent.py), then:

    python3 sms_agent.py pair --server https://sms.example.com --code ABCD-EFGH
    python3 sms_agent.py run --sender termux          # on an Android phone in Termux
    python3 sms_agent.py run --sender modem --port /dev/ttyUSB0
    python3 sms_agent.py run --sender gammu
    python3 sms_agent.py run --sender simulated       # records instead of sending
    python3 sms_agent.py fleet --server URL --email E --password P --count 50
    python3 sms_agent.py simulate-incoming --from +15551234567 --text "Hello"

It speaks the gateway's device protocol (docs/device-protocol.md): poll (long poll when
the server offers it), confirm receipt, send paced by the server's not-before times and
the device's delay, report outcomes, upload incoming SMS. While it waits for the next paced
send it keeps polling, so urgent work created meanwhile goes out first, and it reports each
outcome as soon as it is known. A journal on disk records every confirmed message before it
is sent, so a restart never sends a message twice: messages confirmed but not yet started
are sent after a restart; one whose sending had started when the agent died is left alone
(the server marks it "unknown" at its deadline).

Expected failures (a used or expired pairing code, a device not paired yet, a server that
cannot be reached) end the command with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

AGENT_VERSION = "1.0.0"
log = logging.getLogger("sms_agent")

SENT, DELIVERED, NOT_DELIVERED, GENERIC_FAILURE, NO_SERVICE = 6, 7, 8, 9, 10


# --- HTTP -----------------------------------------------------------------------------------


class AgentError(Exception):
    """An expected failure: main() prints its message as one line and exits with status 1."""


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error.get("code") if isinstance(error, dict) else None


class Stopped(BaseException):
    """Raised by the SIGTERM handler to end a long poll at once (not an error: no handler
    of ``Exception`` may swallow it)."""


class Unreachable(OSError):
    """No HTTP answer from the server (refused, timed out, cut off, not HTTP)."""


class Api:
    """The device API over HTTP(S) with JSON bodies."""

    def __init__(self, server: str, token: str | None = None) -> None:
        if not server.startswith(("http://", "https://")):
            raise SystemExit(f"--server must be an http:// or https:// address, not {server!r}")
        self.base = server.rstrip("/") + "/api/device/v1/"
        self.token = token

    def call(self, name: str, payload: dict[str, Any], timeout: float = 15) -> Any:
        data = json.dumps(payload).encode()
        # The scheme was checked in __init__: http(s) only.
        request = urllib.request.Request(self.base + name, data=data, method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", f"sms-agent/{AGENT_VERSION}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = None
            raise ApiError(exc.code, body) from None
        except urllib.error.URLError as exc:
            raise Unreachable(f"cannot reach the server at {self.base}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(f"cannot reach the server at {self.base}: {reason}") from None
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            # An answer, but not from the device API (a proxy's page, another site).
            raise ApiError(status, None) from None


# --- Journal --------------------------------------------------------------------------------


class Journal:
    """Append-only record of what happened to each message, fsynced before acting on it.

    States: offered (the server offered it; we are confirming) -> confirmed (we own it; not
    yet sent) -> sending (sending started) -> done (outcome known, maybe not reported yet)
    -> reported. Also "refused" (the server did not confirm it: not ours to send) and
    "cancelled"; a message given back to the server (revoked) is "done" with outcome
    "revoked".
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a crash
                self.entries.setdefault(record["id"], {}).update(record)
        self._compact()

    def _compact(self) -> None:
        # Keep unfinished entries and the most recent finished ones (to ignore stale offers).
        finished = [i for i, e in self.entries.items() if e.get("state") == "reported"]
        for message_id in sorted(finished)[:-5000]:
            del self.entries[message_id]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            for entry in self.entries.values():
                handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self.handle = self.path.open("a")

    def knows(self, message_id: int) -> bool:
        # A refused message may come back in a later poll: then it is new to us again.
        return self.entries.get(message_id, {}).get("state") not in (None, "refused")

    def record(self, message_id: int, **fields: Any) -> None:
        with self.lock:
            entry = self.entries.setdefault(message_id, {"id": message_id})
            entry.update(fields)
            self.handle.write(json.dumps({"id": message_id, **fields}) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def in_state(self, state: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self.entries.values() if e.get("state") == state]


# --- Senders --------------------------------------------------------------------------------


class Sender:
    """Sends one SMS; returns the outcomes to report, in order (e.g. [6] or [6, 7] or [9])."""

    name = "base"

    def send(self, to: str, body: str, sim: int, segments: int) -> list[tuple[int, str]]:
        raise NotImplementedError

    def incoming(self) -> list[dict[str, Any]]:
        """SMS received since the last call: {id, sender, body, sim, received_at}."""
        return []


class SimulatedSender(Sender):
    """Records what it would send. For tests, demos and benchmarks."""

    name = "simulated"

    def __init__(self, delay: float = 0.0, failure_rate: float = 0.0, log_path: Path | None = None):
        self.delay = delay
        self.failure_rate = failure_rate
        self.log_path = log_path
        self.sent: list[dict[str, Any]] = []
        self.inbox: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, to: str, body: str, sim: int, segments: int) -> list[tuple[int, str]]:
        if self.delay:
            time.sleep(self.delay)
        record = {"to": to, "body": body, "sim": sim, "at": time.time()}
        with self.lock:
            self.sent.append(record)
            if self.log_path:
                with self.log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
        if random.random() < self.failure_rate:
            return [(GENERIC_FAILURE, "simulated failure")]
        return [(SENT, ""), (DELIVERED, "")]

    def receive(self, sender: str, body: str, sim: int = 0) -> None:
        """Pretend an SMS arrived: the next incoming() returns it."""
        with self.lock:
            self.inbox.append(
                {
                    "id": f"simulated-{uuid.uuid4().hex}",
                    "sender": sender,
                    "body": body,
                    "sim": sim,
                    "received_at": datetime.now(timezone.utc).isoformat(),
                }
            )

    def incoming(self) -> list[dict[str, Any]]:
        with self.lock:
            received, self.inbox = self.inbox, []
        return received


class TermuxSender(Sender):
    """An Android phone running Termux with the Termux:API app (termux-sms-send/-list)."""

    name = "termux"

    def __init__(self, state_dir: Path) -> None:
        for tool in ("termux-sms-send", "termux-sms-list"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} not found: install Termux:API (pkg install termux-api)")
        self.seen_path = state_dir / "termux_seen.json"
        self.seen = set(json.loads(self.seen_path.read_text())) if self.seen_path.exists() else None

    def send(self, to: str, body: str, sim: int, segments: int) -> list[tuple[int, str]]:
        result = subprocess.run(
            ["termux-sms-send", "-n", to, "-s", str(sim), body],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            return [(GENERIC_FAILURE, (result.stderr or result.stdout).strip()[:400])]
        # termux-sms-send reports no delivery receipt: "sent" is all we can know.
        return [(SENT, "")]

    def incoming(self) -> list[dict[str, Any]]:
        result = subprocess.run(
            ["termux-sms-list", "-t", "inbox", "-l", "50"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            log.warning("termux-sms-list failed: %s", result.stderr.strip())
            return []
        rows = json.loads(result.stdout or "[]")
        first_run = self.seen is None
        seen = self.seen or set()
        fresh = [r for r in rows if str(r.get("_id")) not in seen]
        seen.update(str(r.get("_id")) for r in rows)
        self.seen = seen
        self.seen_path.write_text(json.dumps(sorted(seen)[-2000:]))
        if first_run:
            return []  # the inbox as it was before the agent started is not uploaded
        return [
            {
                "id": str(r["_id"]),
                "sender": r.get("number", ""),
                "body": r.get("body", ""),
                "sim": 0,
                "received_at": _termux_time(r.get("received")),
            }
            for r in fresh
        ]


def _termux_time(value: Any) -> str | None:
    if not value:
        return None
    try:
        local = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").astimezone()
        return local.astimezone(timezone.utc).isoformat()
    except ValueError:
        return None


GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


class ModemSender(Sender):
    """A GSM modem or phone on a serial port, driven with AT commands in text mode.

    Text mode sends single-part SMS; longer messages are refused (use --sender gammu, which
    splits them into concatenated parts).
    """

    name = "modem"

    def __init__(self, port: str, baud: int = 115200) -> None:
        import termios

        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        attrs = termios.tcgetattr(self.fd)
        speed = getattr(termios, f"B{baud}")
        attrs[0] = 0  # iflag: raw
        attrs[1] = 0  # oflag
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL  # cflag
        attrs[3] = 0  # lflag: no echo, no canonical mode
        attrs[4] = attrs[5] = speed
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 5  # read() returns after 0.5 s of silence
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.lock = threading.Lock()
        self.command("ATE0")
        self.command("AT+CMGF=1")

    def _read_until(self, endings: tuple[bytes, ...], timeout: float) -> bytes:
        buffer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = os.read(self.fd, 1024)
            buffer += chunk
            if any(end in buffer for end in endings):
                break
        return buffer

    def command(self, text: str, timeout: float = 10) -> str:
        os.write(self.fd, text.encode() + b"\r")
        return self._read_until((b"OK\r\n", b"ERROR"), timeout).decode(errors="replace")

    def send(self, to: str, body: str, sim: int, segments: int) -> list[tuple[int, str]]:
        if segments > 1:
            return [
                (
                    GENERIC_FAILURE,
                    "multi-part SMS need --sender gammu (AT text mode sends one part)",
                )
            ]
        with self.lock:
            if all(c in GSM7 for c in body):
                self.command('AT+CSCS="GSM"')
                number, text = to, body.encode("latin-1", errors="replace")
            else:
                self.command('AT+CSCS="UCS2"')
                self.command("AT+CSMP=17,167,0,8")
                number = to.encode("utf-16-be").hex().upper()
                text = body.encode("utf-16-be").hex().upper().encode()
            os.write(self.fd, f'AT+CMGS="{number}"\r'.encode())
            self._read_until((b">",), 10)
            os.write(self.fd, text + b"\x1a")
            answer = self._read_until((b"OK\r\n", b"ERROR"), 60).decode(errors="replace")
            self.command('AT+CSCS="GSM"')
            self.command("AT+CSMP=17,167,0,0")
        if "+CMGS" in answer and "OK" in answer:
            return [(SENT, "")]
        return [(GENERIC_FAILURE, answer.strip()[:400] or "no answer from the modem")]

    def incoming(self) -> list[dict[str, Any]]:
        with self.lock:
            listing = self.command('AT+CMGL="REC UNREAD"', timeout=15)
        found = []
        pattern = re.compile(r'\+CMGL: (\d+),"[^"]*","([^"]*)",[^\r\n]*\r?\n([^\r\n]*)')
        for index, sender, body in pattern.findall(listing):
            found.append(
                {
                    "id": f"modem-{index}-{hash((sender, body)) & 0xFFFFFFF}",
                    "sender": sender,
                    "body": body,
                    "sim": 0,
                    "received_at": None,
                }
            )
            with self.lock:
                self.command(f"AT+CMGD={index}")
        return found


class GammuSender(Sender):
    """A modem or phone configured for gammu (~/.gammurc); handles multi-part SMS."""

    name = "gammu"

    def __init__(self) -> None:
        if shutil.which("gammu") is None:
            raise SystemExit(
                "gammu not found: install it (apt install gammu) and configure ~/.gammurc"
            )

    def send(self, to: str, body: str, sim: int, segments: int) -> list[tuple[int, str]]:
        command = ["gammu", "sendsms", "TEXT", to, "-text", body]
        if segments > 1:
            command += ["-len", str(len(body))]
        if any(c not in GSM7 for c in body):
            command.append("-unicode")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode == 0:
            return [(SENT, "")]
        return [(GENERIC_FAILURE, (result.stderr or result.stdout).strip()[:400])]


# --- The agent ------------------------------------------------------------------------------


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Agent:
    """Runs the device protocol for one device."""

    def __init__(
        self,
        api: Api,
        sender: Sender,
        journal: Journal,
        *,
        wait: int = 25,
        slots: list[int] | None = None,
        chaos: dict[str, float] | None = None,
    ) -> None:
        self.api = api
        self.sender = sender
        self.journal = journal
        self.wait = wait
        self.slots = slots
        self.chaos = chaos or {}
        # "1.0.0+termux", "1.0.0+simulated": the operator sees how this device sends.
        self.app_version = f"{AGENT_VERSION}+{sender.name}"
        self.poll_interval = 10
        self.delay_between_sms = 0
        self.last_send_by_sim: dict[int, float] = {}
        self.failures = 0
        self.stopping = threading.Event()
        # True while a long poll is in flight: a stop may then end it at once (what it
        # would have brought stays unconfirmed on the server and is handed out again).
        self.in_long_poll = False
        # Limits of run(): polls in all (those made while waiting between sends count too)
        # and a monotonic deadline after which no poll starts.
        self.max_polls: int | None = None
        self.deadline: float | None = None
        self.polls = 0
        self.last_poll_at = float("-inf")  # monotonic
        self.last_upload_at = float("-inf")
        # Whether the server held our last long poll that came back empty (it does not
        # without Redis, or when its long-poll capacity is in use): then we poll plainly.
        self.server_holds = wait > 0

    def _chaos(self, name: str) -> bool:
        return random.random() < self.chaos.get(name, 0.0)

    def may_poll(self) -> bool:
        if self.stopping.is_set():
            return False
        if self.max_polls is not None and self.polls >= self.max_polls:
            return False
        return self.deadline is None or time.monotonic() < self.deadline

    def run(self, *, loops: int | None = None, duration: float | None = None) -> None:
        """Poll, confirm, send and report until stopped, ``loops`` polls or ``duration``
        seconds. Network errors are retried with backoff; a token the server no longer
        accepts raises AgentError."""
        self.max_polls = loops
        self.deadline = time.monotonic() + duration if duration else None
        idle = False
        while self.may_poll():
            if idle and not self.server_holds:
                # Nothing came, and the server did not hold the poll (plain polling, or no
                # long-poll capacity free): wait the server's interval instead of spinning.
                idle = False
                self.stopping.wait(self.poll_interval)
                continue
            try:
                idle = not self.cycle()
                self.failures = 0
            except ApiError as exc:
                if exc.status == 401:
                    raise AgentError(explain(exc)) from None
                if exc.status == 403:
                    # The operator may enable it again: ask rarely, as the protocol says.
                    log.warning("the operator disabled this device; asking again in 5 minutes")
                    self.stopping.wait(300)
                    continue
                self._back_off(exc)
            except (OSError, ValueError) as exc:
                self._back_off(exc)

    def _back_off(self, exc: Exception) -> None:
        self.failures += 1
        backoff = min(60.0, 2 ** min(self.failures, 6)) * (0.5 + random.random() / 2)
        log.warning("network error (%s); retrying in %.1f s", exc, backoff)
        self.stopping.wait(backoff)

    def cycle(self) -> bool:
        """One poll and everything it brings; True when there was work."""
        self.report_pending()  # outcomes known before a restart, or whose report failed
        got_work = self.poll_once(self.wait)
        self.send_confirmed()
        self.report_pending()
        self.upload_incoming()
        return got_work

    def poll_once(self, wait: int) -> bool:
        """One poll: record what it offers and confirm it. True when it brought work.

        What was offered and not yet confirmed is confirmed first: a poll takes over this
        device's unconfirmed leases under a new lease id, and we would have to confirm them
        again with that one. Confirmed messages are never offered again.
        """
        self.confirm_offered()
        payload: dict[str, Any] = {"wait": wait, "app_version": self.app_version}
        if self.slots is not None:
            payload["slots"] = self.slots
        self.polls += 1
        started = self.last_poll_at = time.monotonic()
        self.in_long_poll = wait > 0
        try:
            answer = self.api.call("poll", payload, timeout=wait + 15)
        finally:
            self.in_long_poll = False
        if self._chaos("drop_poll"):
            log.info("chaos: dropping a poll answer")
            return True
        messages = answer.get("messages", [])
        if wait > 0 and not messages:
            self.server_holds = time.monotonic() - started >= wait / 2
        self.poll_interval = answer.get("poll_interval", self.poll_interval)
        self.delay_between_sms = answer.get("delay_between_sms") or 0
        for message_id in answer.get("cancelled", []):
            entry = self.journal.entries.get(message_id)
            if entry and entry.get("state") == "confirmed":
                self.journal.record(message_id, state="cancelled")
        # The server asks for messages back (another phone of its pool will send them):
        # give back what we have not started sending; the rest get their real outcome.
        for message_id in answer.get("revoke", []):
            entry = self.journal.entries.get(message_id)
            if entry and entry.get("state") == "confirmed":
                self.journal.record(message_id, state="done", outcomes=[["revoked", ""]])
        lease = answer.get("lease")
        for message in messages:
            entry = self.journal.entries.get(message["id"], {})
            if not self.journal.knows(message["id"]) or entry.get("state") == "offered":
                # A re-poll hands out what we had not confirmed under a new lease: only the
                # latest lease can be confirmed.
                self.journal.record(message["id"], state="offered", message=message, lease=lease)
        if self._chaos("crash_before_confirm"):
            log.info("chaos: crashing before confirming")
            os._exit(17)
        self.confirm_offered()
        return bool(messages)

    def confirm_offered(self) -> None:
        """Confirm what was offered. Retried after a lost answer (and after a restart): the
        server answers "confirmed" again for what it already confirmed, so nothing the
        server considers ours is ever left unsent."""
        by_lease: dict[str, list[dict[str, Any]]] = {}
        for entry in self.journal.in_state("offered"):
            by_lease.setdefault(entry.get("lease") or "", []).append(entry)
        for lease, offered in by_lease.items():
            if not lease:
                # Offered before this agent knew of leases: the next poll offers them again.
                for entry in offered:
                    self.journal.record(entry["id"], state="refused")
                continue
            answer = self.api.call("confirm", {"ids": [e["id"] for e in offered], "lease": lease})
            if self._chaos("crash_after_confirm"):
                os._exit(18)
            confirmed = set(answer["confirmed"])
            if answer.get("superseded"):
                log.warning(
                    "%d message(s) were taken over by a later poll with this device's token: "
                    "is another agent running with the same state? Not sending them.",
                    len(answer["superseded"]),
                )
            for entry in offered:
                self.journal.record(
                    entry["id"], state="confirmed" if entry["id"] in confirmed else "refused"
                )

    def send_confirmed(self) -> None:
        """Send what is confirmed, urgent first, then by not-before time, and report each
        outcome as soon as it is known. While waiting for a paced send it polls, so work
        that arrives meanwhile (an urgent SMS) is confirmed and takes its turn."""
        while not self.stopping.is_set():
            queue = sorted(
                self.journal.in_state("confirmed"),
                key=lambda e: (not e["message"]["urgent"], e["message"]["not_before"], e["id"]),
            )
            if not queue:
                return
            entry = queue[0]
            message = entry["message"]
            sim = message["sim"]
            # The server's not-before time is a floor; the delay also holds between our own
            # sends, in case an earlier message went out late.
            start = _parse_time(message["not_before"])
            if not message["urgent"] and sim in self.last_send_by_sim:
                start = max(start, self.last_send_by_sim[sim] + self.delay_between_sms)
            if start > time.time():
                self._wait_until(start)
                continue  # the queue may have changed: plan again
            self.journal.record(entry["id"], state="sending")
            if self._chaos("crash_while_sending"):
                os._exit(19)
            outcomes = self.sender.send(message["to"], message["body"], sim, message["segments"])
            self.last_send_by_sim[sim] = time.time()
            self.journal.record(entry["id"], state="done", outcomes=outcomes)
            self._keep_going("report", self.report_pending)

    def _wait_until(self, start: float) -> None:
        """Wait until the wall-clock time ``start``, polling meanwhile: long polls while the
        server holds them, else plain polls every poll interval. Returns early when a poll
        brought work or when stopped."""
        while not self.stopping.is_set():
            pause = start - time.time()
            if pause <= 0:
                return
            if self.may_poll():
                hold = min(int(pause), self.wait) if self.server_holds else 0
                if hold >= 1 or time.monotonic() - self.last_poll_at >= self.poll_interval:
                    log.debug("%.1f s to the next paced send: polling (wait %d s)", pause, hold)
                    brought = self._keep_going("poll", self.poll_once, hold)
                    self._upload_now()
                    if brought:
                        return
                    if brought is False and hold >= 1 and self.server_holds:
                        continue  # the server held the poll: the time has moved on
                nap = max(0.0, self.last_poll_at + self.poll_interval - time.monotonic())
                pause = min(pause, nap)
            self.stopping.wait(pause)

    def _keep_going(self, what: str, step: Any, *args: Any) -> Any:
        """Run a call made between sends; a network error is logged, not raised, so the
        confirmed messages still go out on time (what failed is retried later). A token the
        server refuses still stops the agent."""
        try:
            return step(*args)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            log.warning("%s failed between sends (%s); retrying later", what, exc)
        except (OSError, ValueError) as exc:
            log.warning("%s failed between sends (%s); retrying later", what, exc)
        return None

    def _upload_now(self) -> None:
        # At most once per poll interval: a stream of paced batches must not starve the
        # inbox, nor read it on every poll.
        if time.monotonic() - self.last_upload_at >= self.poll_interval:
            self._keep_going("incoming upload", self.upload_incoming)

    def report_pending(self) -> None:
        pending = self.journal.in_state("done")
        if not pending:
            return
        reports = [
            {"id": e["id"], "status": status, "error": error}
            for e in pending
            for status, error in e.get("outcomes", [])
        ]
        if self._chaos("duplicate_reports"):
            reports = reports + list(reversed(reports))
        self.api.call("report", {"reports": reports})
        for entry in pending:
            self.journal.record(entry["id"], state="reported")

    def upload_incoming(self) -> None:
        self.last_upload_at = time.monotonic()
        upload_incoming(self.api, self.sender.incoming())


def upload_incoming(api: Api, received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upload SMS the device received; answers [{id, sms_id}]. The phone's own id makes a
    repeated upload store nothing new."""
    if not received:
        return []
    stored: list[dict[str, Any]] = api.call("incoming", {"messages": received})["stored"]
    return stored


def explain(exc: ApiError) -> str:
    """One line for the user about an error answer of the server."""
    known = {
        "pairing_refused": "pairing refused: the code is unknown, used or expired (a code "
        "works once, for 15 minutes); create a new one in the admin",
        "login_failed": "pairing refused: wrong email or password",
        "too_many_attempts": "too many failed pairing attempts from here: wait 15 minutes",
        "unauthorized": "the server no longer accepts this device's token (the device was "
        "paired again, or removed): pair it again",
        "forbidden": "the operator disabled this device",
    }
    code = exc.code
    if code in known:
        return known[code]
    if code:
        error = exc.body["error"]
        fields = f" {json.dumps(error['fields'])}" if error.get("fields") else ""
        return f"the server refused the request: {code}: {error.get('message')}{fields}"
    return (
        f"the server answered HTTP {exc.status}, but not as the gateway's device API: "
        "is --server the gateway's address?"
    )


# --- Commands -------------------------------------------------------------------------------


def _state_dir(args: argparse.Namespace) -> Path:
    path = Path(args.state).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _details(args: argparse.Namespace, imei: str = "", sender: str = "") -> dict[str, Any]:
    slots = [int(s) for s in (args.sim_slots or "0").split(",")]
    return {
        "title": args.title,
        "imei": imei or args.imei,
        "app_version": f"{AGENT_VERSION}+{sender}" if sender else AGENT_VERSION,
        "sims": [{"slot": s} for s in slots],
    }


def _credentials(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "device.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        if not isinstance(state.get("token"), str):
            raise ValueError("no token")
    except FileNotFoundError:
        raise AgentError(
            f"this device is not paired yet (no {path}): run "
            "`sms_agent.py pair --server URL --code CODE` first"
        ) from None
    except (ValueError, AttributeError):
        raise AgentError(f"{path} is damaged: pair this device again") from None
    return state


def cmd_pair(args: argparse.Namespace) -> None:
    payload: dict[str, Any] = {"device": _details(args)}
    if args.code:
        payload["code"] = args.code
    else:
        payload.update(email=args.email, password=args.password)
    answer = Api(args.server).call("pair", payload)
    state = {"server": args.server, "device_id": answer["device_id"], "token": answer["token"]}
    path = _state_dir(args) / "device.json"
    path.write_text(json.dumps(state))
    path.chmod(0o600)
    print(f"Paired as device {answer['device_id']}; credentials saved in {path}")


def _sender(args: argparse.Namespace, state_dir: Path) -> Sender:
    if args.sender == "termux":
        return TermuxSender(state_dir)
    if args.sender == "modem":
        return ModemSender(args.port, args.baud)
    if args.sender == "gammu":
        return GammuSender()
    return SimulatedSender(
        args.sim_delay, args.sim_failure_rate, Path(args.sent_log) if args.sent_log else None
    )


def _chaos(args: argparse.Namespace) -> dict[str, float]:
    return {
        "drop_poll": args.chaos_drop_poll,
        "crash_before_confirm": args.chaos_crash_before_confirm,
        "crash_after_confirm": args.chaos_crash_after_confirm,
        "crash_while_sending": args.chaos_crash_while_sending,
        "duplicate_reports": args.chaos_duplicate_reports,
    }


def cmd_run(args: argparse.Namespace) -> None:
    state_dir = _state_dir(args)
    state = _credentials(state_dir)
    api = Api(args.server or state["server"], state["token"])
    agent = Agent(
        api,
        _sender(args, state_dir),
        Journal(state_dir / "journal.jsonl"),
        wait=args.wait,
        chaos=_chaos(args),
    )

    def stop(*_: Any) -> None:
        # A paced wait or a send ends at its next check; a long poll (up to --wait
        # seconds) would delay the stop, and nothing of it is ours yet: end it now.
        agent.stopping.set()
        if agent.in_long_poll:
            raise Stopped

    signal.signal(signal.SIGTERM, stop)
    log.info("device %s running with the %s sender", state["device_id"], agent.sender.name)
    try:
        agent.run(loops=args.loops, duration=args.duration)
    except Stopped:
        log.info("stopped during a long poll")


def cmd_simulate_incoming(args: argparse.Namespace) -> None:
    """Upload one SMS as if this device had received it (for trying the product).

    It reads only the credentials, never the journal, so it is safe beside a running agent
    on the same state folder.
    """
    state = _credentials(_state_dir(args))
    sender = SimulatedSender()
    sender.receive(args.phone, args.text, args.sim)
    api = Api(args.server or state["server"], state["token"])
    (stored,) = upload_incoming(api, sender.incoming())
    print(f"Stored as incoming SMS {stored['sms_id']} (from {args.phone}, SIM slot {args.sim})")


def cmd_fleet(args: argparse.Namespace) -> None:
    """N simulated devices in one process (tests and benchmarks)."""
    state_dir = _state_dir(args)
    agents = []
    for index in range(args.count):
        payload = {
            "email": args.email,
            "password": args.password,
            "device": _details(args, imei=f"FLEET{index:05d}", sender=SimulatedSender.name),
        }
        answer = Api(args.server).call("pair", payload)
        sender = SimulatedSender(
            args.sim_delay, args.sim_failure_rate, Path(args.sent_log) if args.sent_log else None
        )
        journal = Journal(state_dir / f"fleet-{index}.jsonl")
        agents.append(
            Agent(
                Api(args.server, answer["token"]),
                sender,
                journal,
                wait=args.wait,
                chaos=_chaos(args),
            )
        )

    def run_one(agent: Agent) -> None:
        try:
            agent.run(duration=args.duration)
        except AgentError as exc:
            log.error("%s", exc)

    threads = [threading.Thread(target=run_one, args=(a,), daemon=True) for a in agents]

    def stop_all(*_: Any) -> None:
        for agent in agents:
            agent.stopping.set()

    signal.signal(signal.SIGTERM, stop_all)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = sum(len(getattr(a.sender, "sent", [])) for a in agents)
    print(json.dumps({"devices": len(agents), "sent": sent}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--state", default="~/.sms-agent", help="folder for credentials and journal"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    pair = commands.add_parser("pair", help="pair this device with a server")
    pair.add_argument("--server", required=True)
    pair.add_argument("--code", help="pairing code from the admin")
    pair.add_argument("--email")
    pair.add_argument("--password")

    incoming = commands.add_parser(
        "simulate-incoming",
        help="upload an SMS as if this device had received it (for trying the product)",
    )
    incoming.add_argument("--from", dest="phone", required=True, help="sender, e.g. +15551234567")
    incoming.add_argument("--text", required=True, help="the SMS text")
    incoming.add_argument("--sim", type=int, default=0, help="SIM slot it arrived on")
    incoming.add_argument("--server", help="default: the one paired with")

    run = commands.add_parser("run", help="send the device's SMS")
    run.add_argument("--server", help="default: the one paired with")
    fleet = commands.add_parser("fleet", help="run N simulated devices")
    fleet.add_argument("--server", required=True)
    fleet.add_argument("--email", required=True)
    fleet.add_argument("--password", required=True)
    fleet.add_argument("--count", type=int, default=10)

    for sub in (pair, fleet):
        sub.add_argument("--title", default="sms-agent")
        sub.add_argument("--imei", default="")
        sub.add_argument("--sim-slots", default="0", help="comma-separated SIM slots, e.g. 0,1")
    # No default: a forgotten --sender on a real phone must not "send" into a simulator.
    run.add_argument(
        "--sender",
        choices=["termux", "modem", "gammu", "simulated"],
        required=True,
        help="how to send: termux (Android), modem (AT commands), gammu, or simulated "
        "(records instead of sending; the server shows the device as simulated)",
    )
    for sub in (run, fleet):
        sub.add_argument("--port", default="/dev/ttyUSB0", help="modem serial port")
        sub.add_argument("--baud", type=int, default=115200)
        sub.add_argument("--wait", type=int, default=25, help="long-poll seconds (0: plain polls)")
        sub.add_argument(
            "--loops",
            type=int,
            help="stop after this many polls (also those between paced sends)",
        )
        sub.add_argument("--duration", type=float, help="stop after this many seconds")
        sub.add_argument("--sim-delay", type=float, default=0.0, help="simulated send time")
        sub.add_argument("--sim-failure-rate", type=float, default=0.0)
        sub.add_argument("--sent-log", help="simulated sender: append what it sends to this file")
        for name in (
            "drop-poll",
            "crash-before-confirm",
            "crash-after-confirm",
            "crash-while-sending",
            "duplicate-reports",
        ):
            sub.add_argument(f"--chaos-{name}", type=float, default=0.0, help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.command == "pair" and not (args.code or (args.email and args.password)):
        pair.error("give --code, or --email and --password")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    command = {
        "pair": cmd_pair,
        "run": cmd_run,
        "fleet": cmd_fleet,
        "simulate-incoming": cmd_simulate_incoming,
    }[args.command]
    # Expected failures are one plain line, not a traceback: the user can act on it.
    try:
        command(args)
    except ApiError as exc:
        _fail(explain(exc))
    except (AgentError, Unreachable) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _fail(message: str) -> None:
    print(f"sms_agent: error: {message}", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
