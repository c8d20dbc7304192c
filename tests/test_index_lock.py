"""One writer per database: the lock, its message, and a killed holder's lock taken over."""

import os
import signal
import subprocess
import sys
import time

import pytest

import index
from index.lock import DatabaseBusy, WriterLock

HOLD = """
import sys, time
from index.lock import WriterLock
lock = WriterLock(sys.argv[1], what="holder-test").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(db_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid_host_and_start(tmp_path):
    db = index.connect(tmp_path / "db.chorus")
    proc = _holder(db.path)
    try:
        t0 = time.monotonic()
        with pytest.raises(DatabaseBusy) as err:
            db.writer_lock(wait_s=0.5).acquire()
        assert time.monotonic() - t0 >= 0.5  # it waited before giving up
        msg = str(err.value)
        assert f"pid {proc.pid}" in msg and "started" in msg and "holder-test" in msg
        assert "\n" not in msg
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path):
    db = index.connect(tmp_path / "db.chorus")
    proc = _holder(db.path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with db.writer_lock(wait_s=0) as lock:  # the OS dropped the dead process's lock
        assert lock.held
        assert str(os.getpid()) in (db.path / "writer.lock").read_text()
    assert not lock.held


def test_waiting_writer_gets_the_lock_when_the_first_releases(tmp_path):
    first = WriterLock(tmp_path).acquire()
    with pytest.raises(DatabaseBusy):
        WriterLock(tmp_path, wait_s=0).acquire()
    first.release()
    with WriterLock(tmp_path, wait_s=0):
        pass


COUNT = """
import sys
from pathlib import Path
from index.lock import file_lock
lock, counter = Path(sys.argv[1]), Path(sys.argv[2])
for _ in range(200):
    with file_lock(lock):  # read-modify-write: lost updates if two processes interleave
        counter.write_text(str(int(counter.read_text()) + 1))
"""


def test_file_lock_serialises_read_modify_write_across_processes(tmp_path):
    counter = tmp_path / "n.txt"
    counter.write_text("0")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    args = [sys.executable, "-c", COUNT, str(tmp_path / "x.lock"), str(counter)]
    procs = [subprocess.Popen(args, env=env) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert counter.read_text() == "600"
