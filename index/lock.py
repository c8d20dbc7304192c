"""One writer per database: an OS file lock on ``<db>/writer.lock``.

Two ``chorus embed`` runs on one database interleave their deletes and appends and leave
duplicate windows, so a writer holds this lock for its whole run. The lock is the operating
system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), not the file's existence:
the OS drops it when its process dies, however it dies, so the lock of a killed run is simply
free again and nobody has to guess whether a pid is still alive. The file's text (pid, host,
start time, command) only names the holder in the message a second writer gets.

Network file systems that do not support ``flock`` make the lock a no-op there; keep databases
on a local disk (or run one writer by hand).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "writer.lock"
POLL_S = 0.2  # seconds between tries while waiting for another writer


class DatabaseBusy(RuntimeError):
    """Another process holds the database's writer lock; the message names it."""


class WriterLock:
    """Exclusive writer lock of one database folder; a context manager.

    Parameters
    ----------
    db_path : the database folder (holds ``writer.lock``).
    wait_s : seconds to wait for a running writer to finish before giving up.
    what : a short description of this writer, shown to a second one (default: the command line).
    """

    def __init__(self, db_path: str | os.PathLike, wait_s: float = 0.0, what: str | None = None):
        self.path = Path(db_path) / LOCK_FILE
        self.wait_s = float(wait_s)
        self.what = what if what is not None else " ".join(sys.argv)
        self._fh = None

    def acquire(self) -> WriterLock:
        """Take the lock, waiting up to ``wait_s``; raise :class:`DatabaseBusy` if still held."""
        if self._fh is not None:
            return self
        # "a+" never truncates: the holder's text stays readable until we own the lock
        fh = open(self.path, "a+")  # noqa: SIM115 (closed in release)
        deadline = time.monotonic() + self.wait_s
        while not _try_lock(fh):
            if time.monotonic() >= deadline:
                holder = _describe(self.path)
                fh.close()
                raise DatabaseBusy(
                    f"{self.path.parent} is being written by another run ({holder}): "
                    "wait for it to finish, or stop it and run again"
                )
            time.sleep(POLL_S)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(_holder_record(self.what)))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with the next taker)."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.seek(0)
            fh.truncate()
            _unlock(fh)
        finally:
            fh.close()

    @property
    def held(self) -> bool:
        return self._fh is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock on ``path`` across processes for a short critical section; waits for it.

    The same OS lock as :class:`WriterLock` (dropped by the OS when its process dies), without the
    holder's name: for writes of a few milliseconds where waiting is always right.
    """
    with open(path, "a+") as fh:
        _lock(fh)
        try:
            yield
        finally:
            _unlock(fh)


def _holder_record(what: str) -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": what[:200],
    }


def _describe(path: Path) -> str:
    """``pid 123 on host, started 2026-…, `chorus embed …``` from the lock file, or a fallback."""
    try:
        rec = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        rec = {}
    if not isinstance(rec, dict) or "pid" not in rec:
        return "a process that has not written its name yet"
    text = f"pid {rec['pid']} on {rec.get('host', '?')}, started {rec.get('started', '?')}"
    if rec.get("command"):
        text += f": {rec['command']}"
    return text


if os.name == "nt":  # pragma: no cover (no Windows runner)
    import msvcrt

    def _try_lock(fh) -> bool:
        fh.seek(0)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock(fh) -> None:
        while not _try_lock(fh):
            time.sleep(0.01)

    def _unlock(fh) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fh) -> bool:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)

    def _unlock(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
