"""Bulk ingest: /getdata/addalotofsms on PostgreSQL, against a naive DRF baseline.

What it measures (all in this process, on a fresh database ``gateway_bench``):

1. One 10,000-item addalotofsms request through the Django test client: wall time and the
   growth of this process's peak RSS while serving it (``ru_maxrss``, with the peak reset
   through /proc/self/clear_refs just before, when the kernel allows it).
2. 30 requests of 1,000 items each (realistic, distinct international mobile numbers;
   GSM-7 and UCS-2 bodies, ~10% scheduled, ~10% urgent, both SIMs), through
   ``django.test.Client().post("/getdata/addalotofsms", body, content_type="application/json")``:
   the whole real path (URL routing, middleware, JSON parsing, token check, the compat
   parsing of each item, ``messaging.services.prepare`` and the COPY in ``store``).
3. The service alone, ``messaging.services.submit(account, requests, return_ids=False)``,
   with the same number of pre-built ``OutgoingSms``: what the HTTP/compat layer costs is
   the difference between 2 and 3. Its time is split into ``prepare``, the COPY
   (``_copy_rows``) and the commit by wrapping those functions while it runs.
4. Baseline, same number of items, same test client: a naive DRF APIView that validates
   each item with a ``serializers.Serializer`` (sendto, body, device_id, sim, timetosend,
   urgent, customerid; ``many=True``), checks the devices belong to the account, and writes
   with ``Message.objects.bulk_create(batch_size=1000)`` in one transaction. It applies the
   same rules as the real path with the same functions (``normalize_phone``,
   ``segment_count``), so the ratio compares the two ways of doing the same work.

5. The limit, in the same loop: the same number of rows, prepared beforehand by
   ``services.prepare`` (so exactly the rows the real path writes), written by a bare
   ``COPY messaging_message (...) FROM STDIN`` + COMMIT on a psycopg connection of its own:
   what PostgreSQL itself takes for the rows, with the table's indexes and deferred
   foreign-key checks. Beside it, what those cost: the same COPY into three copies of the
   table (``LIKE ... INCLUDING ALL``: every index and check, no foreign key; the same
   without the two trigram GIN indexes; defaults and identity only: no index at all).

Phases 2-5 are interleaved request by request so table and index growth weigh on all of
them equally. Every figure is "committed": after each phase the rows are counted from a
separate PostgreSQL session, and the run fails if the count is not exact.

Targets: real path >= 0.7 of the bare COPY (the limit), >= 30,000 SMS/s committed and >= 3x
the baseline; a 10,000-item request in <= 1 s, and the process stays under 300 MB peak RSS.

Run (PostgreSQL at 127.0.0.1:5432, user postgres; the database in BENCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped):

    .venv/bin/python bench/bulk_ingest.py
    .venv/bin/python bench/bulk_ingest.py --profile    # plus a cProfile of the real path

Bounded: 30 x 1,000 items per phase plus one 10,000-item request each for the real path and
the baseline (~100,000 rows in all); well under a minute on a laptop.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

REQUESTS = 30
ITEMS = 1_000
BIG_ITEMS = 10_000
TARGET_RATE = 30_000
TARGET_SPEEDUP = 3.0
TARGET_BIG_SECONDS = 1.0
TARGET_RSS_MB = 300
TARGET_OF_LIMIT = 0.7
# The copies of messaging_message the limit is also measured on (see the docstring).
CLONES = {
    "bench_copy_all": "INCLUDING ALL",
    "bench_copy_btree": "INCLUDING ALL",  # its GIN indexes dropped after
    "bench_copy_bare": "INCLUDING DEFAULTS INCLUDING IDENTITY",
}

# Customer id ranges tag the rows of each phase, so each phase's rows can be counted.
RANGES = {
    "warm-up": 9_000_000,
    "real 10k": 4_000_000,
    "baseline 10k": 5_000_000,
    "real": 1_000_000,
    "service": 2_000_000,
    "baseline": 3_000_000,
    "limit": 6_000_000,
}

NAMES = ("Anna", "Jonas", "Maria", "Luca", "Sofia", "Noah", "Emma", "Ali", "Chloé", "Mateo")


def make_items(
    count: int, device_id: int, phones: list[str], customer_base: int, seed: int
) -> list[dict[str, Any]]:
    """``count`` addalotofsms items as a client sends them."""
    rng = random.Random(seed)
    future = datetime.now(UTC) + timedelta(days=2)
    items = []
    for i in range(count):
        n = customer_base + i
        name = NAMES[rng.randrange(len(NAMES))]
        kind = rng.random()
        if kind < 0.45:
            code = rng.randrange(10**5, 10**6)
            body = f"Your verification code is {code}. It expires in 10 minutes."
        elif kind < 0.90:
            body = (
                f"Hi {name}, your order #{n} has shipped and arrives on "
                f"{(future + timedelta(days=rng.randrange(5))):%d.%m.}. "
                f"Track it: https://ex.am/t/{rng.randrange(16**8):08x}"
            )
        elif kind < 0.95:
            body = f"Grüße {name}! Ihr Termin am {rng.randrange(1, 29)}.05. um 10:30 ist bestätigt."
        else:
            body = f"Привет, {name}! Ваш заказ №{n} готов к выдаче 📦"
        item: dict[str, Any] = {
            "sendto": phones[i],
            "body": body,
            "device_id": device_id,
            "sim": i % 2,
            "urgent": 1 if rng.random() < 0.1 else 0,
            "customerid": n,
        }
        if rng.random() < 0.1:
            item["timetosend"] = (
                f"{future + timedelta(minutes=rng.randrange(1440)):%Y-%m-%d %H:%M:%S}"
            )
        items.append(item)
    return items


def outgoing(items: list[dict[str, Any]]) -> list[Any]:
    """The same items as the service takes them (what compat.py builds from each item)."""
    from messaging.services import OutgoingSms

    out = []
    for item in items:
        when = item.get("timetosend")
        out.append(
            OutgoingSms(
                device_id=item["device_id"],
                phone=item["sendto"],
                body=item["body"],
                sim=item["sim"],
                send_at=datetime.fromisoformat(when).replace(tzinfo=UTC) if when else None,
                urgent=bool(item["urgent"]),
                customer_id=item["customerid"],
            )
        )
    return out


# --- The naive baseline ------------------------------------------------------------------


def install_baseline_urls() -> str:
    """A URLconf with the real routes plus /bench/naive-bulk; returns its module name."""
    from django.db import transaction
    from django.urls import path
    from django.utils import timezone
    from rest_framework import serializers
    from rest_framework.permissions import AllowAny
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from devices.models import Device
    from gateway.phones import normalize_phone
    from gateway.services import authenticate_token
    from gateway.urls import urlpatterns as real_patterns
    from messaging.encoding import segment_count
    from messaging.models import Message

    class NaiveItem(serializers.Serializer):
        sendto = serializers.CharField(max_length=20_000)
        body = serializers.CharField(max_length=1600)
        device_id = serializers.IntegerField()
        sim = serializers.IntegerField(min_value=0, max_value=1, default=0)
        timetosend = serializers.DateTimeField(required=False, allow_null=True, default=None)
        urgent = serializers.BooleanField(default=False)
        customerid = serializers.IntegerField(required=False, allow_null=True, default=0)

    class NaiveBulk(APIView):
        authentication_classes: list[Any] = []
        permission_classes = [AllowAny]

        def post(self, request: Any) -> Response:
            token = authenticate_token(str(request.data.get("token") or ""))
            if token is None:
                return Response({"error": 1, "message": "Token is invalid"})
            account = token.account
            serializer = NaiveItem(data=request.data.get("smsdata"), many=True)
            if not serializer.is_valid():
                return Response(
                    {"error": 1, "message": "invalid", "errors": serializer.errors[:100]}
                )
            items = serializer.validated_data
            wanted = {item["device_id"] for item in items}
            owned = set(
                Device.objects.for_account(account)
                .filter(pk__in=wanted)
                .values_list("pk", flat=True)
            )
            if wanted - owned:
                return Response({"error": 1, "message": "Device not found"})
            now = timezone.now()
            messages = [
                Message(
                    account=account,
                    device_id=item["device_id"],
                    sim=item["sim"],
                    phone=normalize_phone(item["sendto"]),
                    phone_raw=item["sendto"],
                    body=item["body"],
                    segments=segment_count(item["body"]),
                    send_at=max(item["timetosend"] or now, now),
                    urgent=item["urgent"],
                    customer_id=item["customerid"],
                    created_at=now,
                    status_changed_at=now,
                )
                for item in items
            ]
            with transaction.atomic():
                Message.objects.bulk_create(messages, batch_size=1000)
            return Response({"error": 0, "message": "Sms has been saved successfully"})

    module = types.ModuleType("bench_bulk_urls")
    module.urlpatterns = [path("bench/naive-bulk", NaiveBulk.as_view()), *real_patterns]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module.__name__


# --- Measuring ---------------------------------------------------------------------------


class Counter:
    """Counts committed rows from a separate session (sees only committed data)."""

    def __init__(self, url: str, account_id: int) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.account_id = account_id

    def rows(self, phase: str) -> int:
        base = RANGES[phase]
        row = self.conn.execute(
            "SELECT count(*) FROM messaging_message WHERE account_id = %s "
            "AND customer_id >= %s AND customer_id < %s",
            (self.account_id, base, base + 1_000_000),
        ).fetchone()
        return int(row[0]) if row else 0

    def check(self, phase: str, expected: int) -> str:
        got = self.rows(phase)
        if got != expected:
            raise SystemExit(f"{phase}: {got} rows committed, {expected} expected")
        return f"{got:,} rows committed (checked from another session)"

    def close(self) -> None:
        self.conn.close()


class BareCopy:
    """The limit: prepared rows written by one COPY and a COMMIT on a connection of its own."""

    def __init__(self, url: str, columns: tuple[str, ...]) -> None:
        import psycopg

        self.conn = psycopg.connect(url)
        self.columns = ", ".join(columns)
        with self.conn.transaction():
            for table, how in CLONES.items():
                self.conn.execute(f"CREATE TABLE {table} (LIKE messaging_message {how})")
            gin = self.conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'bench_copy_btree' "
                "AND indexdef LIKE '%USING gin%'"
            ).fetchall()
            for (name,) in gin:
                self.conn.execute(f'DROP INDEX "{name}"')
        self.gin_indexes = len(gin)

    def write(self, table: str, rows: list[tuple[Any, ...]]) -> float:
        started = time.perf_counter()
        sql = f"COPY {table} ({self.columns}) FROM STDIN"
        with self.conn.transaction(), self.conn.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
        return time.perf_counter() - started

    def close(self) -> None:
        with self.conn.transaction():
            for table in CLONES:
                self.conn.execute(f"DROP TABLE {table}")
        self.conn.close()


def post(client: Any, url: str, body: bytes) -> float:
    import orjson

    started = time.perf_counter()
    response = client.post(url, body, content_type="application/json")
    elapsed = time.perf_counter() - started
    answer = orjson.loads(response.content)
    if response.status_code != 200 or answer.get("error") != 0:
        raise SystemExit(f"{url} failed: {response.status_code} {str(answer)[:300]}")
    return elapsed


PROFILE_STEPS = {
    "compat: parameters() (body read + json.loads)": ("compat_wire.py", "parameters"),
    "compat: _outgoing() per item": ("compat.py", "_outgoing"),
    "services.prepare": ("services.py", "prepare"),
    "  gateway.phones.normalize_phone": ("phones.py", "normalize_phone"),
    "  messaging.encoding.segment_count": ("encoding.py", "segment_count"),
    "services.store": ("services.py", "store"),
    "  psycopg waiting for the server": ("psycopg/connection.py", "wait"),
}


@contextmanager
def timed_steps() -> Iterator[dict[str, float]]:
    """Time messaging.services.prepare, store and _copy_rows while submit() calls them."""
    from messaging import services

    steps: dict[str, float] = {}
    originals = {name: getattr(services, name) for name in ("prepare", "store", "_copy_rows")}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - started

        return timed

    for name, function in originals.items():
        setattr(services, name, wrap(name, function))
    try:
        yield steps
    finally:
        for name, function in originals.items():
            setattr(services, name, function)


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def big_request(client: Any, url: str, body: bytes) -> tuple[float, float, float, bool]:
    gc.collect()
    reset = reset_peak_rss()
    before = lib.peak_rss_mb()
    elapsed = post(client, url, body)
    after = lib.peak_rss_mb()
    return elapsed, before, after, reset


def summary(name: str, times: list[float], items: int) -> float:
    total = sum(times)
    rate = len(times) * items / total
    p50 = lib.percentile(times, 50) * 1000
    print(
        f"  {name:<38} {rate:>9,.0f} SMS/s   per request p50 {p50:6.1f} ms"
        f"  max {max(times) * 1000:6.1f} ms  ({len(times)} x {items:,} items in {total:.2f} s)"
    )
    return rate


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", action="store_true", help="cProfile 5 real requests")
    args = parser.parse_args()

    with lib.bench_django():
        import orjson
        from django.db import connection
        from django.test import Client
        from django.test.utils import override_settings

        from messaging.services import _MESSAGE_COLUMNS, prepare, submit

        account, token = lib.make_account("bulk@bench.example")
        device = lib.make_device(account, slots=(0, 1))
        counter = Counter(lib.bench_database_url(), account.pk)
        client = Client()
        pg_version = connection.pg_version // 10000  # type: ignore[attr-defined]
        print(
            f"[setup] PostgreSQL {pg_version}, account #{account.pk}, "
            f"device #{device.pk} (SIM 0, 1); python {sys.version.split()[0]}"
        )

        phones = iter(lib.phone_numbers(REQUESTS * ITEMS * 4 + BIG_ITEMS * 2 + 8 * ITEMS, seed=7))

        def batch(phase: str, offset: int, count: int) -> list[dict[str, Any]]:
            taken = [next(phones) for _ in range(count)]
            return make_items(
                count, device.pk, taken, RANGES[phase] + offset, seed=offset + RANGES[phase]
            )

        def body(items: list[dict[str, Any]]) -> bytes:
            return orjson.dumps({"token": token, "smsdata": items})

        real_url, naive_url = "/getdata/addalotofsms", "/bench/naive-bulk"
        with override_settings(ROOT_URLCONF=install_baseline_urls()):
            # Warm-up: imports, connection, caches of every path (rows counted apart).
            post(client, real_url, body(batch("warm-up", 0, ITEMS)))
            post(client, naive_url, body(batch("warm-up", ITEMS, ITEMS)))
            submit(account, outgoing(batch("warm-up", 2 * ITEMS, ITEMS)), return_ids=False)
            counter.check("warm-up", 3 * ITEMS)

            # 1. One 10,000-item request: time and peak RSS growth.
            lib.rule(f"one request of {BIG_ITEMS:,} items (real path, through the test client)")
            big_body = body(batch("real 10k", 0, BIG_ITEMS))
            big_naive_body = body(batch("baseline 10k", 0, BIG_ITEMS))
            print(f"  request body {len(big_body) / 1e6:.2f} MB")
            big, rss_before, rss_after, reset = big_request(client, real_url, big_body)
            committed = counter.check("real 10k", BIG_ITEMS)
            print(f"  real     : {big:.3f} s = {BIG_ITEMS / big:,.0f} SMS/s; {committed}")
            print(
                f"             peak RSS {rss_before:.1f} MB -> {rss_after:.1f} MB "
                f"(growth {rss_after - rss_before:+.1f} MB; "
                f"peak reset before: {'yes' if reset else 'no, growth is a lower bound'})"
            )
            big_naive, naive_before, naive_after, _ = big_request(client, naive_url, big_naive_body)
            print(
                f"  baseline : {big_naive:.3f} s = {BIG_ITEMS / big_naive:,.0f} SMS/s; "
                f"{counter.check('baseline 10k', BIG_ITEMS)}"
            )
            print(
                f"             peak RSS {naive_before:.1f} MB -> {naive_after:.1f} MB "
                f"(growth {naive_after - naive_before:+.1f} MB)"
            )
            del big_body, big_naive_body

            # 2-4. Interleaved 1,000-item requests.
            lib.rule(
                f"{REQUESTS} requests x {ITEMS:,} items, interleaved (real, service, baseline, "
                "limit)"
            )
            real_bodies = [body(batch("real", i * ITEMS, ITEMS)) for i in range(REQUESTS)]
            service_batches = [
                outgoing(batch("service", i * ITEMS, ITEMS)) for i in range(REQUESTS)
            ]
            naive_bodies = [body(batch("baseline", i * ITEMS, ITEMS)) for i in range(REQUESTS)]
            limit_rows = [
                prepare(account, outgoing(batch("limit", i * ITEMS, ITEMS))).rows
                for i in range(REQUESTS)
            ]
            bare = BareCopy(lib.bench_database_url(), _MESSAGE_COLUMNS)
            clone_t: dict[str, list[float]] = {table: [] for table in CLONES}
            print(
                f"  {REQUESTS * ITEMS * 4:,} distinct phone numbers; "
                f"request body ~{len(real_bodies[0]) / 1e3:.0f} kB"
            )
            real_t: list[float] = []
            service_t: list[float] = []
            prepare_t: list[float] = []
            store_t: list[float] = []
            copy_t: list[float] = []
            naive_t: list[float] = []
            limit_t: list[float] = []
            gc.collect()
            with timed_steps() as steps:
                for i in range(REQUESTS):
                    real_t.append(post(client, real_url, real_bodies[i]))
                    steps.clear()
                    started = time.perf_counter()
                    submit(account, service_batches[i], return_ids=False)
                    service_t.append(time.perf_counter() - started)
                    prepare_t.append(steps["prepare"])
                    store_t.append(steps["store"])
                    copy_t.append(steps["_copy_rows"])
                    naive_t.append(post(client, naive_url, naive_bodies[i]))
                    limit_t.append(bare.write("messaging_message", limit_rows[i]))
                    for table in CLONES:
                        clone_t[table].append(bare.write(table, limit_rows[i]))
            bare.close()
            real_rate = summary("real path (test client -> COPY)", real_t, ITEMS)
            service_rate = summary("service alone (submit, COPY)", service_t, ITEMS)
            naive_rate = summary("baseline (DRF Serializer+bulk_create)", naive_t, ITEMS)
            limit_rate = summary("limit: bare COPY + COMMIT, same rows", limit_t, ITEMS)
            clone_rates = {
                table: summary(f"  into {table}", times, ITEMS) for table, times in clone_t.items()
            }
            for phase in ("real", "service", "baseline", "limit"):
                print(f"  {phase:<9}: {counter.check(phase, REQUESTS * ITEMS)}")
            per_row = {  # microseconds per row, from the sums of seconds
                name: sum(times) / (REQUESTS * ITEMS) * 1e6
                for name, times in (("table", limit_t), *clone_t.items())
            }
            print("  what PostgreSQL spends per row of the bare COPY (means):")
            for label, us in (
                ("the row itself, no index", per_row["bench_copy_bare"]),
                ("+ the B-tree indexes and checks",
                 per_row["bench_copy_btree"] - per_row["bench_copy_bare"]),
                (f"+ the {bare.gin_indexes} trigram GIN indexes (admin search)",
                 per_row["bench_copy_all"] - per_row["bench_copy_btree"]),
                ("+ the foreign keys (deferred checks at COMMIT)",
                 per_row["table"] - per_row["bench_copy_all"]),
            ):  # fmt: skip
                print(f"    {label:<52} {us:6.1f} us")
            per = 1000 / REQUESTS  # ms per request, from a sum of seconds
            print("  where the time of one 1,000-item request goes (means):")
            for label, ms in (
                (
                    "HTTP + JSON + compat item parsing (real - service)",
                    sum(real_t) - sum(service_t),
                ),
                ("services.prepare (checks, phones, segments)", sum(prepare_t)),
                ("services.store: COPY (rows + index maintenance)", sum(copy_t)),
                ("services.store: COMMIT (deferred FK checks, WAL)", sum(store_t) - sum(copy_t)),
            ):
                print(f"    {label:<52} {ms * per:6.1f} ms")

            if args.profile:
                lib.rule("cProfile: 5 real requests of 1,000 items")
                bodies = [body(batch("real", (REQUESTS + i) * ITEMS, ITEMS)) for i in range(5)]
                profiler = cProfile.Profile()
                profiler.enable()
                for b in bodies:
                    post(client, real_url, b)
                profiler.disable()
                stats = pstats.Stats(profiler)
                total = stats.total_tt  # type: ignore[attr-defined]
                print(f"  {total:.3f} s profiled (cProfile slows Python code, not the database)")
                print("  cumulative share of the main steps:")
                entries = stats.stats.items()  # type: ignore[attr-defined]
                for label, (file_part, function) in PROFILE_STEPS.items():
                    cum = sum(
                        value[3]
                        for (filename, _, name), value in entries
                        if name == function and file_part in filename
                    )
                    print(f"    {label:<48} {cum:7.3f} s  {cum / total:5.1%}")
                out = io.StringIO()
                stats.stream = out  # type: ignore[attr-defined]
                print("  top 20 functions by own time:")
                stats.sort_stats("tottime").print_stats(20)
                print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))

        counter.close()
        lib.rule("results")
        speedup = real_rate / naive_rate
        rows = [
            (
                "real path / limit (bare COPY)",
                f"{real_rate / limit_rate:.2f}",
                f">= {TARGET_OF_LIMIT}",
                real_rate / limit_rate >= TARGET_OF_LIMIT,
            ),
            ("service alone / limit", f"{service_rate / limit_rate:.2f}", "", None),
            ("limit: bare COPY + COMMIT", f"{limit_rate:,.0f} SMS/s", "", None),
            (
                "  into the table without indexes",
                f"{clone_rates['bench_copy_bare']:,.0f} SMS/s",
                "",
                None,
            ),
            (
                "real path, 1,000-item requests",
                f"{real_rate:,.0f} SMS/s",
                f">= {TARGET_RATE:,} SMS/s",
                real_rate >= TARGET_RATE,
            ),
            ("service alone (submit)", f"{service_rate:,.0f} SMS/s", "", None),
            ("baseline (DRF + bulk_create)", f"{naive_rate:,.0f} SMS/s", "", None),
            (
                "ratio real/baseline",
                f"{speedup:.2f}x",
                f">= {TARGET_SPEEDUP:.0f}x",
                speedup >= TARGET_SPEEDUP,
            ),
            ("ratio service/baseline", f"{service_rate / naive_rate:.2f}x", "", None),
            (
                "one 10,000-item request",
                f"{big:.3f} s",
                f"<= {TARGET_BIG_SECONDS:.0f} s",
                big <= TARGET_BIG_SECONDS,
            ),
            ("  baseline, and ratio", f"{big_naive:.3f} s, {big_naive / big:.2f}x", "", None),
            (
                "peak RSS serving it",
                f"{rss_after:.1f} MB ({rss_after - rss_before:+.1f} MB)",
                f"< {TARGET_RSS_MB} MB",
                rss_after < TARGET_RSS_MB,
            ),
        ]
        for label, value, target, ok in rows:
            mark = "" if ok is None else f"target {target}: {verdict(ok)}"
            print(f"  {label:<32} {value:>22}   {mark}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
