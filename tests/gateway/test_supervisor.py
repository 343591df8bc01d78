"""gateway.supervisor: runs a Procfile's programs, and stops each the way it means to stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A parent with a child, like a Celery worker and its pool: on SIGTERM the parent stops its
# child itself (with SIGINT) and exits. The child writes down every signal it receives.
PARENT = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", CHILD])
def stop(*_):
    child.send_signal(signal.SIGINT)
    child.wait()
    print("parent: stopped my child", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("parent: ready", flush=True)
while True:
    time.sleep(0.1)
"""
CHILD = """
import signal, sys, time
def note(signum, _):
    open(sys.argv[1] if len(sys.argv) > 1 else "signals.txt", "a").write(signal.Signals(signum).name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, note)
signal.signal(signal.SIGINT, note)
while True:
    time.sleep(0.1)
"""
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('stubborn: ready', flush=True); time.sleep(600)"


def _procfile(tmp_path: Path, **programs: str) -> Path:
    lines = []
    for name, code in programs.items():
        script = tmp_path / f"{name}.py"
        script.write_text(code.replace("CHILD", repr(CHILD)) if "CHILD" in code else code)
        lines.append(f"{name}: {sys.executable} {script}")
    procfile = tmp_path / "Procfile"
    procfile.write_text("# a comment\n\n" + "\n".join(lines) + "\n")
    return procfile


def _start(tmp_path: Path, procfile: Path, stop_seconds: str = "20") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.supervisor", "--procfile", str(procfile)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_STOP_SECONDS": stop_seconds,
             "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _wait_for_line(process: subprocess.Popen[str], text: str, seen: list[str]) -> None:
    """Until a line with ``text`` was printed: the programs print in any order, so it may
    be among the lines read while waiting for another one."""
    assert process.stdout is not None
    if any(text in line for line in seen):
        return
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} in {''.join(seen)}")


def test_a_stop_signals_each_program_not_its_children(tmp_path):
    procfile = _procfile(tmp_path, worker=PARENT, other=PARENT)
    process = _start(tmp_path, procfile)
    seen: list[str] = []
    _wait_for_line(process, "worker | parent: ready", seen)
    _wait_for_line(process, "other", seen)
    time.sleep(0.5)  # the children are running
    process.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = process.communicate(timeout=30)
    log = "".join(seen) + output
    assert process.returncode == 0, log
    # Each child heard only from its own parent.
    assert (tmp_path / "signals.txt").read_text().split() == ["SIGINT", "SIGINT"]
    assert log.count("parent: stopped my child") == 2
    assert "worker stopped in" in log and "other stopped in" in log
    assert "killing" not in log


def test_what_does_not_stop_in_time_is_killed_and_said(tmp_path):
    procfile = _procfile(tmp_path, stubborn=STUBBORN, fine=PARENT)
    process = _start(tmp_path, procfile, stop_seconds="1")
    seen: list[str] = []
    _wait_for_line(process, "stubborn: ready", seen)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    log = "".join(seen) + output
    assert process.returncode == 1, log
    assert "stubborn did not stop in time: killing it" in log
    assert "fine stopped in" in log and "fine did not" not in log


def test_a_program_that_exits_stops_the_others_with_its_code(tmp_path):
    procfile = _procfile(
        tmp_path, crash="import time; time.sleep(0.5); raise SystemExit(3)", fine=PARENT
    )
    process = _start(tmp_path, procfile)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 3, output
    assert "crash exited: stopping fine" in output
    assert "fine stopped in" in output


def test_a_bad_procfile_line_is_named(tmp_path):
    from gateway import supervisor

    procfile = tmp_path / "Procfile"
    procfile.write_text("web: true\nnot a program line\n")
    with pytest.raises(SystemExit, match=r"Procfile:2: not a 'name: command' line"):
        supervisor.read_procfile(procfile)
    with pytest.raises(SystemExit):
        supervisor.main(["--procfile", str(procfile.with_name("missing"))])
