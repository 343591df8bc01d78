"""The admin's message search on 1,000,000 + 200,000 rows: with the trigram indexes, and
without them (the naive baseline: what the same search costs when only scans serve it).

For each search as an operator types it (a whole number with spaces, a national form, a few
digits, a rare word, a common word, a customer id) the messages page of the admin
(``/admin/messaging/message/?q=...``, through the Django test client, logged in as the
bigger account's staff user) is loaded 5 times; printed: the page's p50 and max, and the
execution time of its main query (EXPLAIN ANALYZE) with the plan's scans. Then the two
trigram indexes (migration 0015) are dropped and the same is measured again: the ratio
baseline / indexed is the figure. Last, what the indexes cost writers: 20,000 SMS through
``messaging.submit`` (the COPY of addalotofsms) without them, then with them rebuilt.
Rows: ``bench/_benchlib.load_messages`` (~200,000 distinct numbers, three kinds of text).

Run (PostgreSQL at 127.0.0.1:5432; the database in BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/gateway_bench, is created and dropped), ~3 minutes:

    .venv/bin/python bench/admin_search.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as lib

RUNS = 5


def _searches(account: Any) -> list[tuple[str, str]]:
    from messaging.models import Message

    phone = (
        Message.objects.filter(account=account).order_by("id").values_list("phone", flat=True)[500]
    )
    national = "0" + phone[3:6] + " " + phone[6:10] + " " + phone[10:]
    return [
        ("number with spaces", f"{phone[:3]} {phone[3:6]} {phone[6:]}"),
        ("national form", national),
        ("5 digits", phone[-5:]),
        ("rare word", "bestätigt"),
        ("common word", "shipped"),
        ("customer id", "4711"),
    ]


def _measure(client: Any, term: str) -> tuple[float, float, float, str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            page = client.get("/admin/messaging/message/", {"q": term})
        times.append(time.perf_counter() - started)
        assert page.status_code == 200, page.status_code
    main = max(
        (q["sql"] for q in queries.captured_queries if "FROM \"messaging_message\"" in q["sql"]
         and "LIMIT" in q["sql"]),
        key=len,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + main)
        plan = cursor.fetchone()[0][0]
    scans = sorted(
        {
            node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
            for node in _nodes(plan["Plan"])
            if "Scan" in node.get("Node Type", "")
            and node.get("Relation Name") == "messaging_message"
        }
    )
    return statistics.median(times), max(times), plan["Execution Time"], ", ".join(scans)


def _ingest(account: Any, device: Any, n: int = 20_000) -> float:
    """SMS/s of ``messaging.submit`` (the bulk path: COPY) for n messages in 1,000s."""
    from messaging import services

    started = time.perf_counter()
    for start in range(0, n, 1000):
        services.submit(
            account,
            [
                services.OutgoingSms(device.pk, f"+4915{start + i:09d}", f"Ingest {start + i}")
                for i in range(1000)
            ],
            return_ids=False,
        )
    return n / (time.perf_counter() - started)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found


def main() -> None:
    with lib.bench_django():
        from django.db import connection
        from django.test import Client

        from gateway.models import User

        account_a, _ = lib.make_account("a@bench.example")
        account_b, _ = lib.make_account("b@bench.example")
        devices_a = [lib.make_device(account_a), lib.make_device(account_a)]
        device_b = lib.make_device(account_b)
        lib.rule("Loading 1,000,000 + 200,000 messages")
        seconds = lib.load_messages(
            account_a, account_b, devices_a, device_b, rows_a=1_000_000, rows_b=200_000
        )
        print(f"  loaded in {seconds:.1f} s")
        staff = User.objects.get(email="a@bench.example")
        User.objects.filter(pk=staff.pk).update(is_staff=True)
        client = Client()
        client.force_login(User.objects.get(pk=staff.pk))
        searches = _searches(account_a)
        results: dict[str, dict[str, tuple[float, float, float, str]]] = {}
        for label in ("indexed", "no trigram index"):
            lib.rule(f"Searches, {label}")
            if label != "indexed":
                with connection.cursor() as cursor:
                    cursor.execute("DROP INDEX message_phone_trgm_idx")
                    cursor.execute("DROP INDEX message_body_trgm_idx")
                    cursor.execute("ANALYZE messaging_message")
            results[label] = {}
            for name, term in searches:
                p50, worst, execution, scans = _measure(client, term)
                results[label][name] = (p50, worst, execution, scans)
                print(
                    f"  {name:18} {term!r:22} page p50 {p50 * 1000:7.1f} ms, max "
                    f"{worst * 1000:7.1f} ms; query {execution:7.1f} ms ({scans})"
                )
        lib.rule("Ratio: no trigram index / indexed (page p50)")
        for name, _ in searches:
            ratio = results["no trigram index"][name][0] / results["indexed"][name][0]
            print(f"  {name:18} {ratio:6.1f}x")
        # What the indexes cost writers: bulk ingest without them, then with them again.
        lib.rule("Bulk ingest (messaging.submit, COPY, 20 x 1,000) without / with the indexes")
        without = _ingest(account_a, devices_a[0])
        from importlib import import_module

        migration = import_module("messaging.migrations.0015_message_search_trigrams")
        with connection.cursor() as cursor:
            for statement in migration.CREATE:
                cursor.execute(statement)
        with_indexes = _ingest(account_a, devices_a[0])
        print(
            f"  without {without:,.0f} SMS/s, with {with_indexes:,.0f} SMS/s "
            f"(with / without {with_indexes / without:.2f})"
        )


if __name__ == "__main__":
    main()
