"""Run the Procfile's processes together and stop them cleanly (what ``scripts/run.sh`` execs).

    python -m gateway.supervisor [--procfile Procfile] [name ...]

Each line ``name: command`` runs as ``sh -c "exec command"`` (the shell expands
``${VAR:-default}``, then becomes the program), in a session of its own so that a terminal's
Ctrl-C reaches only this supervisor. Their output is printed line by line, prefixed with the
time and the name.

Stopping (SIGINT, SIGTERM) sends SIGTERM to each program itself, never to its process
group: a Celery worker then stops its pool children the way it means to (a warm shutdown,
running tasks finished) and gunicorn its workers, instead of every child being signalled at
once and reported as killed. Whatever still runs after ``GATEWAY_STOP_SECONDS`` (default 30)
is killed, and said so. A second signal kills at once. When one program exits by itself, the
others are stopped and the supervisor exits with its code.

Only the standard library: it starts before Django and imports nothing of the project.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@dataclass
class Program:
    name: str
    command: str
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def read_procfile(path: Path) -> list[Program]:
    programs = []
    try:
        text = path.read_text()
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise SystemExit(f"{path}:{number}: not a 'name: command' line")
        programs.append(Program(match.group(1), match.group(2)))
    return programs


class Supervisor:
    def __init__(self, programs: list[Program], grace: float, out: IO[str]) -> None:
        self.programs = programs
        self.grace = grace
        self.out = out
        self.width = max(len(p.name) for p in programs)
        self.lock = threading.Lock()
        self.stopping: str | None = None  # why, once a stop began
        self.signals = 0
        self.wake = threading.Event()

    def say(self, name: str, text: str) -> None:
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            self.out.flush()

    def _pump(self, program: Program) -> None:
        assert program.process is not None and program.process.stdout is not None
        for raw in program.process.stdout:
            self.say(program.name, raw.decode("utf-8", "replace").rstrip("\n"))

    def start(self) -> None:
        # Python programs write their lines as they happen, not when a pipe buffer fills.
        env = {**os.environ, "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}
        for program in self.programs:
            program.process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {program.command}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
            program.reader = threading.Thread(target=self._pump, args=(program,), daemon=True)
            program.reader.start()
            self.say("system", f"{program.name} started (pid {program.process.pid})")

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals += 1
        if self.stopping is None:
            self.stopping = signal.Signals(signum).name
        self.wake.set()

    def running(self) -> list[Program]:
        return [p for p in self.programs if p.process is not None and p.process.poll() is None]

    def _signal(self, program: Program, signum: int, *, group: bool) -> None:
        assert program.process is not None
        try:
            if group:
                os.killpg(program.process.pid, signum)
            else:
                os.kill(program.process.pid, signum)
        except ProcessLookupError:
            pass

    def _leftovers(self, program: Program) -> bool:
        """Whether anything of the program's process group outlived it."""
        assert program.process is not None
        try:
            os.killpg(program.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def run(self) -> int:
        self.start()
        failed: Program | None = None
        while self.stopping is None:
            self.wake.wait(0.2)
            for program in self.programs:
                assert program.process is not None
                if program.process.poll() is not None and self.stopping is None:
                    failed = program
                    self.stopping = f"{program.name} exited"
        self.say("system", f"{self.stopping}: stopping {', '.join(p.name for p in self.running())}")
        for program in self.running():
            self._signal(program, signal.SIGTERM, group=False)
        began = time.monotonic()
        deadline = began + self.grace
        seen = self.signals
        reported: set[str] = set()

        def report_stopped() -> None:
            for program in self.programs:
                assert program.process is not None
                code = program.process.poll()
                if code is not None and program.name not in reported:
                    reported.add(program.name)
                    if self._leftovers(program):  # its children outlived it: they go too
                        self._signal(program, signal.SIGKILL, group=True)
                    took = time.monotonic() - began
                    self.say("system", f"{program.name} stopped in {took:.1f} s (exit code {code})")

        while self.running() and time.monotonic() < deadline and self.signals <= seen:
            report_stopped()
            time.sleep(0.1)
        killed = self.running()
        for program in killed:
            self.say("system", f"{program.name} did not stop in time: killing it")
            self._signal(program, signal.SIGKILL, group=True)
        for program in self.programs:
            assert program.process is not None
            program.process.wait()
            if program.reader is not None:
                program.reader.join(timeout=5)
        report_stopped()
        if failed is not None:
            code = failed.process.returncode if failed.process else 1
            return code if code and code > 0 else 1
        return 1 if killed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procfile", default="Procfile", type=Path)
    parser.add_argument("names", nargs="*", help="only these programs (default: all)")
    args = parser.parse_args(argv)
    programs = read_procfile(args.procfile)
    if args.names:
        unknown = set(args.names) - {p.name for p in programs}
        if unknown:
            parser.error(f"not in {args.procfile}: {', '.join(sorted(unknown))}")
        programs = [p for p in programs if p.name in args.names]
    raw = os.environ.get("GATEWAY_STOP_SECONDS", "30")
    try:
        grace = float(raw)
    except ValueError:
        parser.error(f"GATEWAY_STOP_SECONDS must be a number of seconds, got {raw!r}")
    supervisor = Supervisor(programs, grace, sys.stdout)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
