"""scripts/install.sh runs pip only when what it would install changed, so a restart of
scripts/run.sh starts in seconds. Run in a scratch copy with a stand-in virtualenv whose
"python" records what it was asked to do (no real pip, nothing of this checkout touched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/bin/sh
# Stand-in interpreter: answers the version question, logs every pip call.
case "$*" in
  *"-m pip"*) echo "$*" >> "$(dirname "$0")/../pip.log" ;;
  *) echo "3.11.99" ;;
esac
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    for name in ("requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def install(project: Path, *args: str, **env: str) -> int:
    """Run the script; returns how many pip calls it made in all so far."""
    subprocess.run(
        ["bash", str(project / "scripts" / "install.sh"), *args],
        check=True,
        env={**os.environ, **env},
        capture_output=True,
    )
    log = project / ".venv" / "pip.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_pip_runs_once_and_again_only_when_the_pins_change(project):
    assert install(project) == 1
    assert install(project) == 1  # nothing changed: no pip
    with (project / "requirements.lock").open("a") as lock:
        lock.write("# a changed pin\n")
    assert install(project) == 2
    assert install(project) == 2
    assert install(project, GATEWAY_REINSTALL="1") == 3


def test_the_dev_tools_are_installed_when_asked_and_then_serve_a_plain_install(project):
    assert install(project) == 1
    assert install(project, "--dev") == 2  # the plain install had no dev tools
    assert install(project, "--dev") == 2
    assert install(project) == 2  # a dev install serves a plain one


def test_a_failed_install_is_tried_again(project):
    python = project / ".venv" / "bin" / "python"
    python.write_text(
        FAKE_PYTHON.replace(
            '>> "$(dirname "$0")/../pip.log" ;;', '>> "$(dirname "$0")/../pip.log"; exit 1 ;;'
        )
    )
    with pytest.raises(subprocess.CalledProcessError):
        install(project)
    python.write_text(FAKE_PYTHON)
    assert install(project) == 2  # no stamp was left by the failure
