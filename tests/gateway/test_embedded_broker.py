"""The embedded broker's exchange tables exist before any process binds to them."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from kombu import Connection, Exchange, Queue

from gateway.embedded_broker import FANOUT_EXCHANGES, transport_options


def _bind(options: dict, name: str, start=None) -> None:
    with Connection("filesystem://localhost/", transport_options=options) as connection:
        queue = Queue(name, exchange=Exchange("celery.pidbox", type="fanout"), routing_key="")
        bound = queue.bind(connection.default_channel)
        if start is not None:
            start.wait(30)  # all together, as two workers starting at the same moment
        bound.declare()


def test_a_fanout_table_is_there_as_valid_json_before_the_first_bind(tmp_path):
    options = transport_options(tmp_path / "broker")
    for exchange in FANOUT_EXCHANGES:
        table = tmp_path / "broker" / "control" / f"{exchange}.exchange"
        assert json.loads(table.read_bytes()) == []
    assert not [p for p in (tmp_path / "broker" / "control").iterdir() if p.name.startswith(".")]
    assert options["control_folder"] == str(tmp_path / "broker" / "control")


def test_workers_binding_at_once_all_land_in_the_table(tmp_path):
    context = multiprocessing.get_context("fork")
    names = [f"worker{n}.celery.pidbox" for n in range(4)]
    for attempt in range(15):  # without the tables made beforehand, some attempt fails
        options = transport_options(tmp_path / str(attempt))
        start = context.Barrier(len(names))
        processes = [context.Process(target=_bind, args=(options, n, start)) for n in names]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [process.exitcode for process in processes] == [0] * len(names)
        table = Path(str(options["control_folder"])) / "celery.pidbox.exchange"
        assert sorted(row[2] for row in json.loads(table.read_bytes())) == sorted(names)


def test_a_process_starting_later_keeps_the_bindings_already_made(tmp_path):
    options = transport_options(tmp_path / "broker")
    _bind(options, "first.celery.pidbox")
    transport_options(tmp_path / "broker")  # another process's settings, loaded afterwards
    table = json.loads((tmp_path / "broker" / "control" / "celery.pidbox.exchange").read_bytes())
    assert [row[2] for row in table] == ["first.celery.pidbox"]
