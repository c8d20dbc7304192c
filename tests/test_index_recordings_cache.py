"""The recording columns of search results, kept in the cache folder: the same values, no Lance."""

from __future__ import annotations

import numpy as np
import pytest

import index
from index import recordings_cache as rc


@pytest.fixture
def db(tmp_path, settle):
    db = index.connect(tmp_path / "r.chorus")
    (tmp_path / "audio").mkdir()
    db.upsert_recordings(
        [
            {
                "audio_root": tmp_path / "audio",
                "path": f"dür {i % 3}/r{i}.wav",
                "site": None if i % 4 == 0 else f"S{i % 3}",
                "start_time": None if i % 5 == 0 else f"2024-05-0{1 + i % 9}T0{i % 10}:30:15",
            }
            for i in range(30)
        ]
    )
    settle(db.path)
    return db


@pytest.mark.parametrize(
    "values", [["a", None, "", "dür/ß €", None], [], [None, None], ["x" * 1000]]
)
def test_strings_round_trip_like_an_object_array(values):
    col = rc.Strings.encode(values)
    want = np.array(values, dtype=object)
    assert len(col) == len(values) and col.dtype == object
    at = np.arange(len(values))[::-1]
    assert col[at].tolist() == want[at].tolist()
    assert col[np.array([], np.int64)].tolist() == []


def test_a_kept_lookup_reads_the_same_as_the_table(db, monkeypatch):
    want = db.recordings_lookup(keep=True)
    assert (db.cache_dir / rc.FILE).exists()
    monkeypatch.setattr(
        index.db.Database, "_dataset_stamped", lambda *a: pytest.fail("read through Lance")
    )
    got = index.connect(db.path).recordings_lookup()
    at = np.arange(len(want["recording_id"]))
    for name in ("recording_id", "audio_root", "path", "site", "start_time"):
        assert got[name][at].tolist() == want[name][at].tolist(), name
    assert np.isnat(got["start_time"]).sum() == 6 and sum(s is None for s in got["site"][at]) == 8


def test_a_lookup_is_kept_only_when_asked_and_settled(db, tmp_path):
    db.recordings_lookup()
    assert not (db.cache_dir / rc.FILE).exists()
    db.recordings_lookup(keep=True)  # the same version, read before without keeping it
    assert (db.cache_dir / rc.FILE).exists()
    (db.cache_dir / rc.FILE).unlink()
    db.upsert_recording(tmp_path / "audio", "new.wav")  # a recent commit
    db.recordings_lookup(keep=True)
    assert not (db.cache_dir / rc.FILE).exists()


def test_a_changed_table_is_read_again(db, tmp_path, settle):
    db.recordings_lookup(keep=True)
    rid = db.upsert_recording(tmp_path / "audio", "new.wav", site="N")
    settle(db.path)
    got = index.connect(db.path).recordings_lookup()
    at = np.searchsorted(got["recording_id"], [rid])
    assert got["site"][at].tolist() == ["N"]


@pytest.mark.parametrize("damage", ["truncated", "offsets", "unsorted", "stamp"])
def test_a_damaged_file_is_not_used(db, damage):
    want = db.recordings_lookup(keep=True)
    stamp = db._lookup_stamp
    path = db.cache_dir / rc.FILE
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "offsets":  # offsets past the bytes, in a well-formed file
        header, cols = rc.read_columns(path)
        arrays = {k: np.array(v) for k, v in cols.items()}
        arrays["path.offsets"][-1] += 10**6
        rc.write_columns(path, arrays, {"stamp": header["stamp"]})
    elif damage == "unsorted":  # well formed, but ids a search could not bisect
        header, cols = rc.read_columns(path)
        arrays = {k: np.array(v) for k, v in cols.items()}
        arrays["recording_id"] = arrays["recording_id"][::-1].copy()
        rc.write_columns(path, arrays, {"stamp": header["stamp"]})
    assert rc.load(db.cache_dir, (stamp[0], stamp[1] + 1) if damage == "stamp" else stamp) is None
    again = index.connect(db.path).recordings_lookup()
    at = np.arange(len(want["path"]))
    assert again["path"][at].tolist() == want["path"][at].tolist()
