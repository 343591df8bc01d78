"""The shape of the code that the rest relies on, checked from the source.

- Message status is written only by ``messaging.lifecycle`` (moves) and created only by
  ``messaging.services`` (new rows with their first status).
- The project's modules import each other in one direction: no cycles, and services and
  models never import an interface (``api``, ``admin``, ``tasks``, ``views``).
- docs/statuses.md shows the legal moves exactly as ``messaging.models`` defines them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from messaging.models import LEGAL_SOURCES, Status

ROOT = Path(__file__).resolve().parent.parent
APPS = ("gateway", "devices", "messaging", "contacts")
LIFECYCLE = "messaging/lifecycle.py"
CREATION = "messaging/services.py"


def _sources() -> dict[str, str]:
    files = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative or "/agent/" in relative:
                continue
            files[relative] = path.read_text()
    return files


WRITERS = ("update", "create", "get_or_create", "update_or_create")


def status_writes(source: str) -> list[str]:
    """Where ``source`` writes a message status: an UPDATE with ``status=``, an assignment to
    ``.status``, a row created with ``status=``, or SQL that sets the column."""
    found = []
    for node in ast.walk(ast.parse(source)):
        keywords = {k.arg for k in node.keywords} if isinstance(node, ast.Call) else set()
        if "status" in keywords:
            assert isinstance(node, ast.Call)
            if isinstance(node.func, ast.Attribute) and node.func.attr in WRITERS:
                found.append(f"line {node.lineno}: .{node.func.attr}(status=...)")
            if isinstance(node.func, ast.Name) and node.func.id == "Message":
                found.append(f"line {node.lineno}: Message(status=...)")
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(f"line {node.lineno}: .status = ...")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            sql = node.value.lower()
            if re.search(r"update\s+messaging_message\b.*\bset\b[^;]*\bstatus\s*=", sql, re.S):
                found.append(f"line {node.lineno}: an UPDATE of the status in SQL")
            if re.search(r"insert\s+into\s+messaging_message\b[^)]*\bstatus\b", sql, re.S):
                found.append(f"line {node.lineno}: an INSERT with a status in SQL")
    return found


def test_the_status_check_finds_each_way_of_writing_a_status():
    sample = """
Message.objects.filter(pk=1).update(status=6)
message.status = 7
Message(phone="1", status=1)
Message.objects.create(status=1)
cursor.execute("UPDATE messaging_message SET sent_at = now(), status = 6 WHERE id = 1")
"""
    assert len(status_writes(sample)) == 5
    assert status_writes("Newsletter.objects.update(state='done')\nx = r.status") == []


def test_message_status_is_written_only_by_the_lifecycle_and_created_only_in_messaging():
    offenders = {
        path: writes
        for path, source in _sources().items()
        if path not in (LIFECYCLE, CREATION) and (writes := status_writes(source))
    }
    assert offenders == {}
    # and the creation module creates, it does not move: no UPDATE of a status there
    creation = [w for w in status_writes(_sources()[CREATION]) if "update" in w.lower()]
    assert creation == []


def _module_of(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imports(path: str, source: str) -> set[str]:
    """Project modules that ``source`` imports, anywhere in it (function bodies too)."""
    modules = set(_module_of(p) for p in _sources())
    package = (
        _module_of(path) if path.endswith("__init__.py") else _module_of(path).rpartition(".")[0]
    )
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            # the longest project module this name is, or is inside of
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != _module_of(path) and name.split(".")[0] in APPS:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    return {_module_of(path): _imports(path, source) for path, source in _sources().items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_project_modules_import_each_other_without_cycles():
    assert cycles(import_graph()) == []


INTERFACE = re.compile(r"(^|\.)(api|admin|admin_\w+|tasks|views|urls|management|asgi)(\.|$)")


def test_services_and_models_never_import_an_interface():
    wrong = {
        module: sorted(i for i in imported if INTERFACE.search(i) and i != "gateway.tasks")
        for module, imported in import_graph().items()
        if not INTERFACE.search(module)
    }
    # gateway.tasks is the shared on-commit enqueue helper services use, not an interface.
    assert {m: i for m, i in wrong.items() if i} == {}


def legal_moves_table() -> str:
    """The legal moves as docs/statuses.md shows them: one row per target status."""
    rows = ["| to | from |", "|---|---|"]
    for target, sources in sorted(LEGAL_SOURCES.items()):
        if sources:
            shown = ", ".join(str(s.value) for s in sorted(sources))
            rows.append(f"| {target.value} {target.label} | {shown} |")
    return "\n".join(rows)


def test_docs_statuses_show_the_legal_moves_of_the_code():
    text = (ROOT / "docs" / "statuses.md").read_text()
    assert legal_moves_table() in text, "paste this table into docs/statuses.md:\n" + (
        legal_moves_table()
    )
    for status in Status:
        assert re.search(rf"^\| {status.value} \|", text, re.M), status
