"""The embedded Celery broker: kombu's filesystem transport, in folders under ``var/``.

kombu keeps a fanout exchange's bindings in a JSON file it creates on the first bind. Two
workers starting at once (the Procfile's ``worker`` and ``webhooks`` both bind their
remote-control queue to ``celery.pidbox``) can race there: one creates the file empty and,
before it has written and locked it, the other opens it, reads nothing and stops with a
JSON error. So the tables exist, as valid empty JSON, before any process connects; kombu
then always takes its locked read-modify-write path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# The fanout exchanges Celery binds to: remote control (pidbox), which every worker joins.
FANOUT_EXCHANGES = ("celery.pidbox",)


def _create_table(path: Path) -> None:
    """Create ``path`` holding an empty table, atomically; an existing table stays as it is."""
    if path.exists():
        return
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=".new-", suffix=".exchange")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(b"[]")
        # A hard link appears whole or not at all, and never replaces a table another
        # process made (and may already have bound a queue in) meanwhile.
        with contextlib.suppress(FileExistsError):
            os.link(scratch, path)
    finally:
        os.unlink(scratch)


def transport_options(folder: Path) -> dict[str, str | bool]:
    """Make the broker's folders and exchange tables under ``folder``; kombu's options for them."""
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for exchange in FANOUT_EXCHANGES:
        _create_table(folder / "control" / f"{exchange}.exchange")
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
