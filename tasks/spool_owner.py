"""Whose spool is it: an owner file and a heartbeat per spool, and the sweep of spools that crashed runs left.

A spool holds phone numbers. A run deletes its own when it ends (`Spool.remove`), but a run that is killed
(SIGKILL, the OOM killer, a power cut) cannot, so the next run of any campaign with the same data folder
removes it (`sweep_abandoned_spools`, called before it spools). Several runs may use one data folder at the
same time (two campaigns; two machines on a shared disk), so a spool is removed only when its run is known to
be gone:

- its run ran on this machine (same boot, same PID namespace: `globe_sms.ledger.lease.pid_scope`, as the
  ledger's run lease judges it) and that process no longer exists: at once;
- otherwise, when its heartbeat is older than `STALE_SECONDS`. A living run touches its owner file every
  `HEARTBEAT_SECONDS` from a daemon thread (it stops when the process dies, whatever the run is waiting for),
  so only a dead (or frozen) process misses an hour of them. Machines sharing a disk see the file server's
  modification times, so their clocks may differ by far less than that bound.

A spool without a readable owner file (being created this very moment, or written by an older globe-sms)
counts by the newest modification time in its folder. Nothing here reads the spool's contents.

    <data folder>/spool/<campaign>-<token>/owner.json   {"host", "pid", "pid_scope", "started_at"}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from globe_sms.clock import utc_now
from globe_sms.ledger.lease import pid_scope, process_gone

OWNER_FILE = "owner.json"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 3600.0


@dataclass(frozen=True)
class SpoolOwner:
    """The process a spool belongs to. No secret and no number: it is left on disk.

    Attributes:
        host: the machine's name, for people.
        pid: the process.
        pid_scope: where that pid means something (`globe_sms.ledger.lease.pid_scope`); None off Linux.
        started_at: when the spool was created (UTC, ISO 8601), for people.
    """

    host: str
    pid: int
    pid_scope: str | None
    started_at: str

    @classmethod
    def this_process(cls) -> SpoolOwner:
        return cls(socket.gethostname(), os.getpid(), pid_scope(), utc_now().isoformat())

    @classmethod
    def read(cls, folder: Path) -> SpoolOwner | None:
        """The owner written in `folder`, or None when there is no readable owner file."""
        try:
            data: Any = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
            return cls(str(data["host"]), int(data["pid"]), data["pid_scope"], str(data["started_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, folder: Path) -> None:
        """Write the owner file atomically (a reader never sees half of it)."""
        partial = folder / f".{OWNER_FILE}.{os.getpid()}"
        partial.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(partial, folder / OWNER_FILE)

    def is_gone(self) -> bool:
        """Its process ran on this machine (same boot and PID namespace) and no longer exists."""
        return self.pid_scope is not None and self.pid_scope == pid_scope() and process_gone(self.pid)


def last_sign_of_life(folder: Path) -> float:
    """The owner file's modification time (the heartbeat), else the newest in the folder; 0 if unreadable."""
    with contextlib.suppress(OSError):
        return (folder / OWNER_FILE).stat().st_mtime
    newest = 0.0
    for root, dirs, files in os.walk(folder):
        for name in (root, *(os.path.join(root, entry) for entry in dirs + files)):
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(name).st_mtime)
    return newest


def is_abandoned(folder: Path, now: float | None = None) -> bool:
    """Whether the spool at `folder` belongs to a run that is gone (see the module docstring)."""
    owner = SpoolOwner.read(folder)
    if owner is not None and owner.is_gone():
        return True
    age = (time.time() if now is None else now) - last_sign_of_life(folder)
    return age > STALE_SECONDS


def sweep_abandoned_spools(spool_root: Path, *, keep: Path | None = None) -> list[str]:
    """Remove the spools under `spool_root` (`<data folder>/spool`) whose runs are gone; keep every live one.

    Args:
        spool_root: the folder holding the spools.
        keep: a spool never to remove (the caller's own).

    Returns:
        The names of the removed spool folders (`<campaign>-<token>`: no number).
    """
    removed: list[str] = []
    with contextlib.suppress(OSError):  # no spool folder yet
        for folder in sorted(spool_root.iterdir()):
            if folder == keep or not folder.is_dir() or not is_abandoned(folder):
                continue
            shutil.rmtree(folder, ignore_errors=True)  # another run may be removing it too
            removed.append(folder.name)
    return removed


class _Heartbeat:
    """A daemon thread touching a spool's owner file every `HEARTBEAT_SECONDS` until stopped."""

    def __init__(self, owner_file: Path) -> None:
        self._file = owner_file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"spool-heartbeat-{owner_file.parent.name}",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):  # the spool was removed: nothing left to keep alive
                os.utime(self._file)

    def stop(self) -> None:
        self._stop.set()


_heartbeats: dict[Path, _Heartbeat] = {}
_heartbeats_lock = threading.Lock()


def claim_spool(folder: Path) -> None:
    """Create the spool folder `folder`, write this process as its owner, and keep its heartbeat going.

    Raises:
        FileExistsError: `folder` exists already.
    """
    folder.mkdir(parents=True, exist_ok=False)
    SpoolOwner.this_process().write(folder)
    with _heartbeats_lock:
        _heartbeats[folder] = _Heartbeat(folder / OWNER_FILE)


def release_spool(folder: Path) -> None:
    """Stop the heartbeat of a spool this process claimed (nothing if it claimed none)."""
    with _heartbeats_lock:
        heartbeat = _heartbeats.pop(folder, None)
    if heartbeat is not None:
        heartbeat.stop()


__all__ = [
    "HEARTBEAT_SECONDS",
    "OWNER_FILE",
    "STALE_SECONDS",
    "SpoolOwner",
    "claim_spool",
    "is_abandoned",
    "last_sign_of_life",
    "release_spool",
    "sweep_abandoned_spools",
]
