"""Pools: what routing across phones costs, how evenly it spreads, how fast it fails over.

Three sections, each printing its figures and a line ``target ...: MET`` or ``MISSED``:

1. **Drain** - 50 phones, both protocols mixed (25 paired over our device protocol, 25
   registered as SMSGate app phones), one SIM each (batch 100, 1,000 segments/minute, no
   delay between SMS, a 10-minute poll interval: pacing never limits). The same number of
   SMS (100,000 by default, ``--messages``) is drained twice: bound to the phones directly
   (the client spreads them, one device id each), and sent to a round-robin pool of the 50
   SIMs (one device id for all). Each run is split in two halves, interleaved (direct, pooled,
   direct, pooled), so both see the same machine and table sizes. A drain is the phones'
   own wire calls through the Django test client, in-process, one phone after another:
   ours ``poll`` -> ``confirm`` -> ``report`` ("sent"), the app ``GET /message`` ->
   ``PATCH /message`` ("Sent", 100 reports per call). Figures: SMS created per second
   (through ``messaging.submit``, 1,000 per call, the path of ``addalotofsms``), SMS
   claimed and reported per second, and pooled / direct for both.
   Target: claims per second pooled >= direct / 1.2.
2. **Share** - of the pooled drain, SMS per SIM against the round-robin target (1/50 each),
   and 20,000 SMS routed by a weighted pool (weights 1-5 over the 50 SIMs) against the
   weights. Target: every SIM within +-5 % of its target share.
3. **Failover** - a round-robin pool of 3 phones of our protocol polling every 5 s (plain
   polls, real time) with the server's default lease (``DEVICE_LEASE_SECONDS``, 60 s);
   beat's two sweeps run in a thread at beat's intervals (``device-lease-sweep`` every
   15 s, ``pool-routing-sweep`` every 10 s: ``devices.tasks.sweep_leases`` and
   ``route_pools``, as a worker would run them). One phone takes its leases and dies
   without confirming. Measured: from its poll to the moment the other phones hold every
   one of them (claimed and confirmed). Bounded at 240 s.
   Target: <= lease + 30 s.

Run (PostgreSQL at 127.0.0.1:5432, user postgres, trust auth; the database in
BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/gateway_bench, is created
and dropped; no Redis):

    .venv/bin/python bench/pools.py                    # all three, ~6 minutes
    .venv/bin/python bench/pools.py --messages 20000   # a shorter drain
    .venv/bin/python bench/pools.py --section 3

Bounded in count and time; in-process, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import bench_django, make_account, rule

PHONES = 50
CHUNK = 1000


def _phones(account: Any) -> tuple[list[tuple[Any, str]], list[tuple[Any, str]]]:
    """25 phones of our protocol and 25 SMSGate app phones, each with one SIM."""
    from devices import services
    from devices.models import Device

    ours, apps = [], []
    for i in range(PHONES // 2):
        device, token = services.pair_with_login(
            account, services.DeviceDetails(title=f"agent {i}", imei=f"35824005{i:07d}")
        )
        ours.append((device, token))
        phone, app_token = services.register_app(
            account, f"bench/app{i}", (services.SimInfo(slot=0, iccid=f"8949{i:015d}"),)
        )
        apps.append((phone, app_token))
    Device.objects.filter(pk__in=[d.pk for d, _ in ours + apps]).update(
        # 1,000 segments/minute is the most a SIM may be set to; a poll interval of 10
        # minutes lets a poll hand out what those allow in the next 10.5 minutes, so the
        # drain is bounded by the server, not by pacing.
        batch_size=100,
        segments_per_minute=1000,
        delay_between_sms=0,
        delay_between_requests=600,
    )
    return ours, apps


def _keep_online(devices: list[Any]) -> None:
    from django.utils import timezone

    from devices.models import Device

    Device.objects.filter(pk__in=[d.pk for d in devices]).update(last_seen_at=timezone.now())


def _submit(account: Any, targets: list[int], n: int, seed: int) -> float:
    """n SMS, the i-th to targets[i % len(targets)]; seconds taken."""
    from messaging import services as messaging

    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        messaging.submit(
            account,
            [
                messaging.OutgoingSms(
                    targets[i % len(targets)], f"+49157{seed:02d}{i:07d}", f"Bench {i}"
                )
                for i in range(start, min(start + CHUNK, n))
            ],
        )
    return time.perf_counter() - started


class Drainer:
    """The phones' wire calls through the test client, one phone after another."""

    def __init__(self, ours: list[tuple[Any, str]], apps: list[tuple[Any, str]]) -> None:
        from django.test import Client

        self.ours = [Client(HTTP_AUTHORIZATION=f"Bearer {t}") for _, t in ours]
        self.apps = [Client(HTTP_AUTHORIZATION=f"Bearer {t}") for _, t in apps]

    def _ours(self, client: Any) -> int:
        def call(name: str, body: dict[str, Any]) -> Any:
            answer = client.post(f"/api/device/v1/{name}", body, content_type="application/json")
            assert answer.status_code == 200, answer.content[:300]
            return answer.json()

        polled = call("poll", {"wait": 0})
        ids = [m["id"] for m in polled["messages"]]
        if not ids:
            return 0
        confirmed = call("confirm", {"ids": ids, "lease": polled["lease"]})["confirmed"]
        call("report", {"reports": [{"id": i, "status": "sent"} for i in confirmed]})
        return len(confirmed)

    def _app(self, client: Any) -> int:
        answer = client.get("/api/mobile/v1/message")
        assert answer.status_code == 200, answer.content[:300]
        served = [m for m in answer.json() if m.get("state") != "Cancelling"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
        for start in range(0, len(served), 100):
            reports = [
                {
                    "id": m["id"],
                    "state": "Sent",
                    "recipients": [{"phoneNumber": m["phoneNumbers"][0], "state": "Sent"}],
                    "states": {"Sent": stamp},
                }
                for m in served[start : start + 100]
            ]
            patched = client.patch(
                "/api/mobile/v1/message", json.dumps(reports), content_type="application/json"
            )
            assert patched.status_code == 204, patched.content[:300]
        return len(served)

    def drain(self, expected: int, bound: float = 600.0) -> tuple[int, float]:
        """Claim and report until ``expected`` SMS went out; (count, seconds)."""
        done, started = 0, time.perf_counter()
        while done < expected and time.perf_counter() - started < bound:
            round_ = 0
            for ours, app in zip(self.ours, self.apps, strict=True):
                round_ += self._ours(ours) + self._app(app)
            done += round_
            if round_ == 0:
                break
        return done, time.perf_counter() - started


def section_drain(total: int) -> dict[str, Any]:
    from devices import pools
    from devices.models import PoolMember, SimSlot
    from messaging.models import Message, MessageStatusChange, Status

    rule(f"1. Drain: {total:,} SMS over {PHONES} phones (25 ours + 25 SMSGate app), twice")
    print("  (after a warm-up of 500 direct + 500 pooled, not counted)")
    account, _ = make_account("drain@bench.example")
    ours, apps = _phones(account)
    devices = [d for d, _ in ours + apps]
    pool = pools.create_pool(account, "Bench pool", "round_robin")
    for slot in SimSlot.objects.filter(device__in=devices).order_by("device_id"):
        PoolMember.objects.create(pool=pool, sim=slot)
    drainer = Drainer(ours, apps)
    half = total // 2
    # Warm-up, not counted: the first requests of a process pay for imports and caches.
    for targets in ([d.pk for d in devices], [pool.pk]):
        _keep_online(devices)
        _submit(account, targets, 500, seed=99)
        drainer.drain(500)
    figures: dict[str, list[float]] = {"create_direct": [], "create_pooled": []}
    figures.update(drain_direct=[], drain_pooled=[])
    counts = {"direct": 0, "pooled": 0}
    for round_ in range(2):
        for kind in ("direct", "pooled"):
            _keep_online(devices)
            targets = [pool.pk] if kind == "pooled" else [d.pk for d in devices]
            created = _submit(account, targets, half, seed=round_ * 2 + (kind == "pooled"))
            done, seconds = drainer.drain(half)
            figures[f"create_{kind}"].append(created)
            figures[f"drain_{kind}"].append(seconds)
            counts[kind] += done
            print(
                f"  round {round_ + 1} {kind:6}: created {half:,} in {created:.2f} s "
                f"({half / created:,.0f}/s); drained {done:,} in {seconds:.2f} s "
                f"({done / seconds:,.0f} claims/s)"
            )
    rates = {k: counts[k] / sum(figures[f"drain_{k}"]) for k in ("direct", "pooled")}
    create = {k: 2 * half / sum(figures[f"create_{k}"]) for k in ("direct", "pooled")}
    sent = Message.objects.filter(account=account, status=Status.SENT).count()
    moves = MessageStatusChange.objects.filter(
        message__account=account, to_status=Status.SENT
    ).count()
    created_all = 4 * half + 1000
    print(f"  SMS sent: {sent:,} of {created_all:,} created; moves to Sent: {moves:,}")
    print(
        f"  create: direct {create['direct']:,.0f}/s, pooled {create['pooled']:,.0f}/s "
        f"(pooled/direct {create['pooled'] / create['direct']:.2f})"
    )
    ratio = rates["pooled"] / rates["direct"]
    print(
        f"  claims: direct {rates['direct']:,.0f}/s, pooled {rates['pooled']:,.0f}/s "
        f"(pooled/direct {ratio:.2f}; limit 1/1.2 = 0.83, so {ratio / (1 / 1.2):.2f} of it)"
    )
    met = ratio >= 1 / 1.2 and counts["pooled"] == counts["direct"] == 2 * half
    met = met and sent == moves == created_all  # each SMS sent, and sent once
    print(f"target claims/s pooled >= direct / 1.2: {'MET' if met else 'MISSED'}")
    per_sim = Counter(
        Message.objects.filter(account=account, pool=pool).values_list("device_id", flat=True)
    )
    return {"pool": pool, "per_sim": per_sim, "pooled": 2 * half + 500, "account": account}


def section_share(drained: dict[str, Any] | None) -> None:
    from devices import pools
    from devices.models import PoolMember, SimSlot
    from messaging.models import Message

    rule("2. Share per SIM against the strategy's target")
    worst = 0.0
    if drained is not None:
        target = drained["pooled"] / PHONES
        counts = drained["per_sim"]
        spread = [abs(counts[d] - target) / target for d in counts]
        worst = max(spread)
        print(
            f"  round-robin: {len(counts)} SIMs, target {target:,.0f} each; "
            f"min {min(counts.values()):,}, max {max(counts.values()):,}, "
            f"worst deviation {100 * worst:.2f} %"
        )
        account = drained["account"]
        slots = list(SimSlot.objects.filter(device__account=account).order_by("device_id"))
    else:
        account, _ = make_account("share@bench.example")
        ours, apps = _phones(account)
        slots = list(
            SimSlot.objects.filter(device__in=[d for d, _ in ours + apps]).order_by("device_id")
        )
    _keep_online([s.device for s in slots])
    weighted = pools.create_pool(account, "Weighted", "weighted")
    weights = {}
    for i, slot in enumerate(slots):
        weights[slot.device_id] = 1 + i % 5
        PoolMember.objects.create(pool=weighted, sim=slot, weight=weights[slot.device_id])
    n = 20_000
    _submit(account, [weighted.pk], n, seed=90)
    got = Counter(Message.objects.filter(pool=weighted).values_list("device_id", flat=True))
    total_weight = sum(weights.values())
    dev = [abs(got[d] - n * w / total_weight) / (n * w / total_weight) for d, w in weights.items()]
    print(
        f"  weighted (1-5): {n:,} SMS over {len(weights)} SIMs; worst deviation "
        f"{100 * max(dev):.2f} % of the SIM's target"
    )
    worst = max(worst, max(dev))
    print(
        f"target every SIM within +-5 % of its share (worst {100 * worst:.2f} %, "
        f"{worst / 0.05:.2f} of the limit): {'MET' if worst <= 0.05 else 'MISSED'}"
    )


def section_failover() -> None:
    from django.conf import settings
    from django.db import close_old_connections
    from django.test import Client

    from devices import pools, services, tasks
    from devices.models import Device, PoolMember, SimSlot
    from messaging.models import Message

    lease = settings.DEVICE_LEASE_SECONDS
    rule(f"3. Failover of a killed phone's unconfirmed leases (lease {lease} s)")
    account, _ = make_account("failover@bench.example")
    phones = []
    for i in range(3):
        device, token = services.pair_with_login(
            account, services.DeviceDetails(title=f"fo {i}", imei=f"35824006{i:07d}")
        )
        phones.append((device, Client(HTTP_AUTHORIZATION=f"Bearer {token}")))
    Device.objects.filter(pk__in=[d.pk for d, _ in phones]).update(
        batch_size=50, segments_per_minute=1000, delay_between_requests=5
    )
    pool = pools.create_pool(account, "Failover", "round_robin")
    for slot in SimSlot.objects.filter(device__in=[d for d, _ in phones]):
        PoolMember.objects.create(pool=pool, sim=slot)
    _keep_online([d for d, _ in phones])
    _submit(account, [pool.pk], 90, seed=95)

    def call(client: Any, name: str, body: dict[str, Any]) -> Any:
        return client.post(f"/api/device/v1/{name}", body, content_type="application/json").json()

    victim, victim_client = phones[0]
    taken = {m["id"] for m in call(victim_client, "poll", {"wait": 0})["messages"]}
    killed_at = time.monotonic()
    print(f"  phone #{victim.pk} took {len(taken)} leases and died without confirming")
    stop = threading.Event()

    def beat() -> None:
        next_lease, next_route = time.monotonic() + 15, time.monotonic() + 10
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_lease:
                tasks.sweep_leases()
                next_lease += 15
            if now >= next_route:
                tasks.route_pools()
                next_route += 10
            stop.wait(0.5)
        close_old_connections()

    sweeper = threading.Thread(target=beat, daemon=True)
    sweeper.start()
    held_elsewhere: set[int] = set()
    try:
        while time.monotonic() - killed_at < 240 and held_elsewhere != taken:
            for _, client in phones[1:]:
                answer = call(client, "poll", {"wait": 0})
                ids = [m["id"] for m in answer["messages"]]
                if ids:
                    got = call(client, "confirm", {"ids": ids, "lease": answer["lease"]})
                    call(client, "report", {"reports": [{"id": i, "status": "sent"} for i in ids]})
                    held_elsewhere |= taken & set(got["confirmed"])
            if held_elsewhere != taken:
                time.sleep(5)  # the survivors' poll interval
    finally:
        stop.set()
        sweeper.join()
    seconds = time.monotonic() - killed_at
    twice = Message.objects.filter(pk__in=taken, device=victim).count()
    print(
        f"  {len(held_elsewhere)} of {len(taken)} taken over by the other phones in "
        f"{seconds:.1f} s (still on the dead phone: {twice})"
    )
    limit = lease + 30
    met = held_elsewhere == taken and seconds <= limit
    print(
        f"target failover <= lease + 30 s = {limit} s ({seconds / limit:.2f} of it): "
        f"{'MET' if met else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--section", type=int, action="append", choices=[1, 2, 3])
    args = parser.parse_args()
    sections = set(args.section or [1, 2, 3])
    with bench_django():
        drained = section_drain(max(args.messages, 200)) if 1 in sections else None
        if 2 in sections:
            section_share(drained)
        if 3 in sections:
            section_failover()


if __name__ == "__main__":
    main()
