"""getallsms: one 500-item page out of 1,000,000 SMS, per filter, against a naive baseline.

What it measures: the time of ``GET /getdata/getallsms?token=...&limit=500&<filter>``
through the Django test client (routing, middleware, token check, the query that
``messaging.services.list_messages`` builds, rendering 500 items in the SMSGateway24 shape)
on a table of 1,200,000 messages in PostgreSQL:

- account A: 1,000,000 messages over 2 devices x 2 SIMs, 12 statuses (mostly delivered and
  sent), ~200,000 distinct phone numbers, customer ids (40% none, 20% 0 as bulk stores
  them, 40% among 50,000), created over the last 365 days (ids grow with time), rendered in
  Europe/Berlin;
- account B: 200,000 messages interleaved with A's (every 6th id), so tenant filtering is
  never free.

Rows are written by one ``INSERT ... SELECT FROM generate_series`` (deterministic
``setseed``), followed by ``VACUUM ANALYZE`` (the steady state of a table autovacuum
keeps up with).

For each filter - none, device_id, status (a common and a rare one), begindate+enddate
(random 30-day windows, and the last 30 days), sim, customerid, phone, orderbydesc, the
first page of the smaller tenant B, and a deep page (``after_id`` at 70-95% of the
account's messages) - 50 requests (values varied where it is natural: windows, customers,
phones, depths) are timed, and p50/p95 printed. Target: p95 <= 50 ms. The limit per filter:
the execution time of the page's SQL (EXPLAIN ANALYZE, below) plus ``orjson.dumps`` of the
page's own answer, already shaped; target p95 <= 3x that limit.

``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL the real request issued on messaging_message
(captured with ``CaptureQueriesContext``) is printed per filter, and any ``Seq Scan`` on
messaging_message is flagged.

Baseline, same client, same filters (the queryset of ``messaging.services.filtered_messages``),
same 500 rows (checked id for id): a DRF APIView rendering the page with a
``ModelSerializer(many=True)`` and paging with ``OFFSET`` (so the deep page is
``OFFSET 700000..950000``). Printed: real/baseline time ratio per filter (below 1 = real
path faster) and its inverse, the speedup.

Run (PostgreSQL at 127.0.0.1:5432; the database in BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped):

    .venv/bin/python bench/getallsms_page.py

Bounded: 1.2 M rows (~30 s to load), 50 requests per filter for the real path and at most
50 for the baseline (fewer for the OFFSET deep page, whose cost grows with depth); ~2 min.
"""

from __future__ import annotations

import random
import sys
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

ROWS_A = 1_000_000
ROWS_B = 200_000
PAGE = 500
REQUESTS = 50
BASELINE_REQUESTS = 50
BASELINE_DEEP_REQUESTS = 20
TARGET_P95_MS = 50.0
TARGET_OF_LIMIT = 3.0  # real p95 / (the query's execution + serializing the shaped page)
SEED = 20240531

RARE_STATUS = 21  # expired, 2% of the rows (lib.STATUS_MIX)


def load_rows(account_a: Any, account_b: Any, devices_a: list[Any], device_b: Any) -> float:
    """Insert ROWS_A + ROWS_B messages with one INSERT ... SELECT; returns seconds taken."""
    return lib.load_messages(
        account_a, account_b, devices_a, device_b, rows_a=ROWS_A, rows_b=ROWS_B
    )


# --- The naive baseline ------------------------------------------------------------------


def install_baseline_urls() -> str:
    """A URLconf with the real routes plus /bench/naive-sms; returns its module name."""
    from django.urls import path
    from rest_framework import serializers
    from rest_framework.permissions import AllowAny
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from gateway.phones import normalize_phone
    from gateway.services import authenticate_token
    from gateway.urls import urlpatterns as real_patterns
    from messaging.models import Message
    from messaging.services import MessageFilter, filtered_messages

    class NaiveMessage(serializers.ModelSerializer):
        newsletter_title = serializers.CharField(source="newsletter.title", default=None)
        newsletter_body = serializers.CharField(source="newsletter.body", default=None)

        class Meta:
            model = Message
            fields = [
                "id",
                "phone",
                "body",
                "customer_id",
                "status",
                "device",
                "urgent",
                "created_at",
                "sent_at",
                "send_at",
                "sim",
                "newsletter",
                "newsletter_title",
                "newsletter_body",
            ]

    def integer(params: Any, name: str) -> int | None:
        value = params.get(name)
        return int(value) if value not in (None, "") else None

    def day(params: Any, name: str, end: bool = False) -> datetime | None:
        value = params.get(name)
        if not value:
            return None
        start = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end else start

    class NaiveMessages(APIView):
        authentication_classes: list[Any] = []
        permission_classes = [AllowAny]

        def get(self, request: Any) -> Response:
            params = request.query_params
            token = authenticate_token(params.get("token", ""))
            if token is None:
                return Response({"error": 1, "message": "Token is invalid"})
            phone = params.get("phone")
            query = MessageFilter(
                device_id=integer(params, "device_id"),
                status=integer(params, "status"),
                created_from=day(params, "begindate"),
                created_to=day(params, "enddate", end=True),
                sim=integer(params, "sim"),
                customer_id=integer(params, "customerid"),
                phone=normalize_phone(phone) if phone else None,
            )
            offset = integer(params, "offset") or 0
            limit = integer(params, "limit") or 1000
            # The same order as the real listing: creation time for date windows, else id.
            by_time = query.created_from is not None or query.created_to is not None
            order = ["created_at", "id"] if by_time else ["id"]
            if params.get("orderbydesc") == "1":
                order = ["-" + field for field in order]
            page = (
                filtered_messages(token.account, query)
                .select_related("newsletter")
                .order_by(*order)[offset : offset + limit]
            )
            data = NaiveMessage(page, many=True).data
            return Response({"error": 0, "smss": data, "count": len(data), "message": "Ok"})

    module = types.ModuleType("bench_getallsms_urls")
    module.urlpatterns = [path("bench/naive-sms", NaiveMessages.as_view()), *real_patterns]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module.__name__


# --- The cases -----------------------------------------------------------------------------


def cases(
    account: Any, devices: list[Any], token: str, other_token: str
) -> list[tuple[str, list[dict], list[dict]]]:
    """(name, real query params per request, baseline query params per request)."""
    from django.db import connection

    rng = random.Random(SEED)
    base = {"token": token, "limit": PAGE}

    def same(extra: dict) -> tuple[list[dict], list[dict]]:
        return [{**base, **extra}] * REQUESTS, [{**base, **extra}] * BASELINE_REQUESTS

    def sample(sql: str, count: int) -> list[Any]:
        with connection.cursor() as cursor:
            cursor.execute(sql, [account.pk, count])
            return [row[0] for row in cursor.fetchall()]

    phones = sample(
        "SELECT phone FROM messaging_message WHERE account_id = %s ORDER BY md5(id::text) LIMIT %s",
        REQUESTS,
    )
    customers = sample(
        "SELECT customer_id FROM messaging_message WHERE account_id = %s AND customer_id > 0 "
        "ORDER BY md5(id::text) LIMIT %s",
        REQUESTS,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(created_at), max(created_at) FROM messaging_message WHERE account_id = %s",
            [account.pk],
        )
        first, last = cursor.fetchone()
    windows = []
    for _ in range(REQUESTS):
        start = first + timedelta(days=rng.randrange(1, (last - first).days - 31))
        windows.append(
            {"begindate": f"{start:%Y-%m-%d}", "enddate": f"{start + timedelta(days=29):%Y-%m-%d}"}
        )
    depths = [rng.randrange(int(ROWS_A * 0.70), int(ROWS_A * 0.95)) for _ in range(REQUESTS)]
    deep_real, deep_naive = [], []
    with connection.cursor() as cursor:
        for depth in depths:
            cursor.execute(
                "SELECT id FROM messaging_message WHERE account_id = %s ORDER BY id "
                "OFFSET %s LIMIT 1",
                [account.pk, depth - 1],
            )
            (after_id,) = cursor.fetchone()
            deep_real.append({**base, "after_id": after_id})
            deep_naive.append({**base, "offset": depth})

    out = [
        ("none", *same({})),
        ("device_id", *same({"device_id": devices[0].pk})),
        ("status (7, 45%)", *same({"status": 7})),
        (f"status ({RARE_STATUS}, 2%)", *same({"status": RARE_STATUS})),
        (
            "begindate+enddate (random 30d)",
            [{**base, **w} for w in windows],
            [{**base, **w} for w in windows[:BASELINE_REQUESTS]],
        ),
        (
            "begindate+enddate (last 30 days)",
            *same(
                {
                    "begindate": f"{last - timedelta(days=29):%Y-%m-%d}",
                    "enddate": f"{last:%Y-%m-%d}",
                }
            ),
        ),
        ("sim", *same({"sim": 1})),
        (
            "customerid",
            [{**base, "customerid": c} for c in customers],
            [{**base, "customerid": c} for c in customers[:BASELINE_REQUESTS]],
        ),
        (
            "phone",
            [{**base, "phone": p} for p in phones],
            [{**base, "phone": p} for p in phones[:BASELINE_REQUESTS]],
        ),
        ("orderbydesc", *same({"orderbydesc": 1})),
        (
            "none, tenant B (200k rows)",
            [{**base, "token": other_token}] * REQUESTS,
            [{**base, "token": other_token}] * BASELINE_REQUESTS,
        ),
        ("deep page (after_id / OFFSET)", deep_real, deep_naive[:BASELINE_DEEP_REQUESTS]),
    ]
    return out


# --- Measuring -----------------------------------------------------------------------------


def fetch(client: Any, url: str, params: dict) -> tuple[float, list[int]]:
    import orjson

    started = time.perf_counter()
    response = client.get(url, params)
    elapsed = time.perf_counter() - started
    answer = orjson.loads(response.content)
    if response.status_code != 200 or answer.get("error") != 0:
        raise SystemExit(f"{url} {params} failed: {response.status_code} {str(answer)[:300]}")
    smss = answer["smss"]
    ids = [int(k) for k in smss] if isinstance(smss, dict) else [item["id"] for item in smss]
    return elapsed, ids


def dumps_ms(client: Any, url: str, params: dict) -> float:
    """The page's own answer, already shaped, serialized again by orjson."""
    return lib.redump_ms(client.get(url, params).content)


def explain(client: Any, url: str, params: dict) -> tuple[list[str], bool, str]:
    """EXPLAIN ANALYZE of the SQL on messaging_message that one request issued."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fetch(client, url, params)
    statements = [q["sql"] for q in captured.captured_queries if "messaging_message" in q["sql"]]
    return lib.explain_statements(statements)


def main() -> None:
    with lib.bench_django():
        from django.db import connection
        from django.test import Client
        from django.test.utils import override_settings

        account, token = lib.make_account("pages@bench.example", time_zone="Europe/Berlin")
        other, other_token = lib.make_account("other-tenant@bench.example")
        devices = [
            lib.make_device(account, title="Phone A1"),
            lib.make_device(account, title="Phone A2"),
        ]
        other_device = lib.make_device(other, title="Phone B1")

        seconds = load_rows(account, other, devices, other_device)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT account_id, count(*), count(DISTINCT phone), count(DISTINCT status) "
                "FROM messaging_message GROUP BY account_id ORDER BY account_id"
            )
            counts = cursor.fetchall()
            cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('messaging_message'))")
            (size,) = cursor.fetchone()
        total = sum(c[1] for c in counts)
        print(
            f"[setup] {total:,} rows loaded + VACUUM ANALYZE in {seconds:.1f} s; "
            f"messaging_message with indexes: {size}"
        )
        for account_id, rows, phones, statuses in counts:
            print(
                f"[setup]   account #{account_id}: {rows:,} rows, {phones:,} phones, "
                f"{statuses} statuses"
            )
        if [c[1] for c in counts] != [ROWS_A, ROWS_B]:
            raise SystemExit("unexpected row counts")

        client = Client()
        real_url, naive_url = "/getdata/getallsms", "/bench/naive-sms"
        results: list[dict[str, Any]] = []
        with override_settings(ROOT_URLCONF=install_baseline_urls()):
            all_cases = cases(account, devices, token, other_token)
            # Warm-up: imports, connection, the first plan of each path.
            fetch(client, real_url, all_cases[0][1][0])
            fetch(client, naive_url, all_cases[0][2][0])

            lib.rule("EXPLAIN (ANALYZE, BUFFERS) of the SQL each real request issues")
            for name, real_params, _ in all_cases:
                plan, seq_scan, scan = explain(client, real_url, real_params[0])
                flag = "  <-- Seq Scan on messaging_message!" if seq_scan else ""
                print(f"\n--- {name}{flag}")
                print("\n".join("    " + line for line in plan))
                executed = lib.execution_ms(plan)
                results.append(
                    {"name": name, "seq_scan": seq_scan, "scan": scan, "exec_ms": executed}
                )
            deep_name, _, deep_naive = all_cases[-1]
            plan, _, _ = explain(client, naive_url, deep_naive[0])
            print(f"\n--- baseline, {deep_name}: OFFSET {deep_naive[0]['offset']:,}")
            print("\n".join("    " + line for line in plan))

            lib.rule(f"timing: {REQUESTS} requests per filter, {PAGE} items per page")
            for result, (name, real_params, naive_params) in zip(results, all_cases, strict=True):
                real_t, naive_t = [], []
                sizes = set()
                for params in real_params:
                    elapsed, ids = fetch(client, real_url, params)
                    real_t.append(elapsed)
                    sizes.add(len(ids))
                for index, params in enumerate(naive_params):
                    elapsed, naive_ids = fetch(client, naive_url, params)
                    naive_t.append(elapsed)
                    if index == 0:  # the same page, id for id
                        _, real_ids = fetch(client, real_url, real_params[0])
                        if real_ids != naive_ids:
                            raise SystemExit(f"{name}: the baseline page differs from the real one")
                result.update(
                    dumps_ms=dumps_ms(client, real_url, real_params[0]),
                    real_p50=lib.percentile(real_t, 50) * 1000,
                    real_p95=lib.percentile(real_t, 95) * 1000,
                    naive_p50=lib.percentile(naive_t, 50) * 1000,
                    naive_p95=lib.percentile(naive_t, 95) * 1000,
                    naive_n=len(naive_t),
                    sizes=f"{min(sizes)}-{max(sizes)}" if len(sizes) > 1 else str(sizes.pop()),
                )
                print(
                    f"  {name:<34} real p50 {result['real_p50']:6.1f} "
                    f"p95 {result['real_p95']:6.1f} ms | baseline p50 {result['naive_p50']:7.1f} "
                    f"p95 {result['naive_p95']:7.1f} ms"
                )

        lib.rule("results (times in ms; ratio = real p50 / baseline p50, below 1 = real faster)")
        print(
            f"  {'filter':<34} {'items':>7} {'real p50':>9} {'real p95':>9} {'base p50':>9} "
            f"{'base p95':>9} {'ratio':>6} {'speedup':>8}  p95<={TARGET_P95_MS:.0f}  "
            f"{'limit':>6} {'p95/limit':>9}  scan on messaging_message"
        )
        missed, over = [], []
        for r in results:
            ok = r["real_p95"] <= TARGET_P95_MS
            if not ok:
                missed.append(r["name"])
            ratio = r["real_p50"] / r["naive_p50"]
            limit = r["exec_ms"] + r["dumps_ms"]
            of_limit = r["real_p95"] / limit
            if of_limit > TARGET_OF_LIMIT:
                over.append(r["name"])
            print(
                f"  {r['name']:<34} {r['sizes']:>7} {r['real_p50']:9.1f} {r['real_p95']:9.1f} "
                f"{r['naive_p50']:9.1f} {r['naive_p95']:9.1f} {ratio:6.2f} {1 / ratio:7.1f}x  "
                f"{'MET   ' if ok else 'MISSED'}  {limit:6.1f} {of_limit:9.1f}  {r['scan']}"
            )
        print(
            "  limit = the page's SQL execution (EXPLAIN ANALYZE) + orjson.dumps of the shaped "
            f"page; target p95 / limit <= {TARGET_OF_LIMIT:.0f}: "
            + ("MET for every filter" if not over else "MISSED for " + ", ".join(over))
        )
        seq = [r["name"] for r in results if r["seq_scan"]]
        print(
            f"  baseline requests per filter: {results[0]['naive_n']} "
            f"({results[-1]['naive_n']} for the OFFSET deep page)"
        )
        print(
            f"  target p95 <= {TARGET_P95_MS:.0f} ms: "
            + ("MET for every filter" if not missed else "MISSED for " + ", ".join(missed))
        )
        print("  Seq Scan on messaging_message: " + (", ".join(seq) if seq else "none"))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
