"""Database layer: layout, recordings, embeddings, crash-safe ingest bookkeeping."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import index

DIM = 16


def _rows(recording_id: int, n: int, seed: int = 0, dim: int = DIM) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    starts = np.arange(n) * 5.0
    return pd.DataFrame(
        {
            "recording_id": np.full(n, recording_id),
            "start_s": starts,
            "end_s": starts + 5.0,
            "vector": list(rng.standard_normal((n, dim)).astype(np.float32) * 3.0),
        }
    )


@pytest.fixture
def db(tmp_path):
    d = index.connect(tmp_path / "survey.chorus")
    (tmp_path / "audio").mkdir()
    d.upsert_recording(tmp_path / "audio", "a.wav", site="A", duration_s=3600.0, size=10, mtime=1.5)
    d.upsert_recording(tmp_path / "audio", "sub/b.wav", site="B", duration_s=1800.0)
    return d


def test_connect_creates_layout_and_reopens(tmp_path):
    path = tmp_path / "s.chorus"
    db = index.connect(path)
    for sub in ("lance", "faiss", "cache"):
        assert (path / sub).is_dir()
    meta = json.loads((path / "chorus.json").read_text())
    assert meta["schema_version"] == 1
    assert {"audio_roots", "models", "created", "updated"} <= set(meta)
    db.register_model("perch", {"dim": DIM, "weights": None})
    root = db.add_audio_root(tmp_path)
    rid = db.upsert_recording(root, "x.wav", site="S1", start_time="2024-03-01T04:15:00")
    db.add_embeddings("perch", _rows(rid, 7))
    again = index.connect(path, create=False)
    assert again.meta["models"]["perch"] == {"dim": DIM, "weights": None}
    assert again.meta["audio_roots"] == [str(tmp_path.resolve())]
    assert again.windows("perch").count_rows() == 7
    assert again.recording(rid)["start_time"] == pd.Timestamp("2024-03-01 04:15:00")
    assert not list(path.glob("*.tmp"))  # atomic writes leave no temp files
    with pytest.raises(FileNotFoundError, match="no Chorus database"):
        index.connect(tmp_path / "missing.chorus", create=False)


def test_upsert_recording_keeps_identity_and_fields(db, tmp_path):
    recs = db.recordings()
    assert list(recs["recording_id"]) == [0, 1]
    assert recs.loc[1, "path"] == "sub/b.wav"
    assert recs.loc[1, "abs_path"] == str((tmp_path / "audio" / "sub" / "b.wav").resolve())
    # same key, absolute path form: same id, unspecified fields kept
    rid = db.upsert_recording(tmp_path / "audio", tmp_path / "audio" / "a.wav", channels=2)
    assert rid == 0
    rec = db.recording(0)
    assert (rec["site"], rec["channels"], rec["size"], rec["status"]) == ("A", 2, 10, "ok")
    assert db.mark_failed(tmp_path / "audio", "c.mp3", "not audio") == 2
    assert db.recordings(status="failed")["error"].tolist() == ["not audio"]
    assert db.recording_id(tmp_path / "audio", "sub/b.wav") == 1
    with pytest.raises(KeyError):
        db.recording(99)
    with pytest.raises(ValueError, match="not inside the audio root"):
        db.upsert_recording(tmp_path / "audio", tmp_path / "elsewhere.wav")
    with pytest.raises(ValueError, match="unknown recording field"):
        db.upsert_recording(tmp_path / "audio", "a.wav", colour="red")
    with pytest.raises(ValueError, match="status"):
        db.upsert_recording(tmp_path / "audio", "a.wav", status="weird")


def test_add_embeddings_round_trip_normalises(db):
    rows = _rows(0, 10)
    raw = np.stack(rows["vector"])
    ids = db.add_embeddings("m", rows)
    assert ids.tolist() == list(range(10))
    # pyarrow input with a 2-D vector column and explicit channels
    table = pa.table(
        {
            "recording_id": pa.array([1, 1], pa.int64()),
            "channel": pa.array([0, 1], pa.int32()),
            "start_s": [0.0, 0.0],
            "end_s": [5.0, 5.0],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(raw[:2].ravel()), DIM),
        }
    )
    ids2 = db.add_embeddings("m", table)
    assert ids2.tolist() == [10, 11]
    got_ids, vec = db.vectors("m", [11, 3])
    assert got_ids.tolist() == [11, 3]
    np.testing.assert_allclose(vec[1], raw[3] / np.linalg.norm(raw[3]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, rtol=1e-6)
    stored = db.windows("m").to_arrow().to_pandas().sort_values("window_id")
    np.testing.assert_allclose(stored["norm"][:10], np.linalg.norm(raw, axis=1), rtol=1e-6)
    assert stored["channel"].tolist() == [-1] * 10 + [0, 1]
    all_ids, all_vec = db.vectors("m")
    assert all_ids.tolist() == list(range(12)) and all_vec.shape == (12, DIM)
    with pytest.raises(KeyError, match="window id"):
        db.vectors("m", [999])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.drop(columns=["end_s"]), "lack column"),
        (lambda r: r.assign(window_id=1), "window ids are assigned"),
        (lambda r: r.assign(vector=list(np.ones((len(r), DIM + 1)))), "dimensions"),
        (lambda r: r.assign(vector=list(np.full((len(r), DIM), np.nan))), "NaN"),
        (lambda r: r.assign(end_s=r["start_s"] - 1), "start_s <= end_s"),
        (lambda r: r.assign(recording_id="x"), "recording_id"),
        (lambda r: r.assign(channel=-3), "channel"),
    ],
)
def test_add_embeddings_validation(db, change, message):
    db.add_embeddings("m", _rows(0, 3))  # fixes the table dimension
    with pytest.raises(ValueError, match=message):
        db.add_embeddings("m", change(_rows(0, 3)))
    assert db.windows("m").count_rows() == 3  # nothing committed by a rejected call


def test_add_embeddings_bad_inputs(db):
    with pytest.raises(TypeError, match="pyarrow.Table"):
        db.add_embeddings("m", [1, 2, 3])
    with pytest.raises(ValueError, match="bad model name"):
        db.add_embeddings("bad name!", _rows(0, 2))
    assert db.add_embeddings("m", _rows(0, 0)).tolist() == []
    with pytest.raises(KeyError, match="no embeddings"):
        db.windows("m")


def test_begin_finish_recording_crash_and_rerun(db, tmp_path):
    db.begin_recording("m", 0)
    first = db.add_embeddings("m", _rows(0, 4))
    db.finish_recording("m", 0, 4)
    # recording 1: a crash after one of two chunks -> not done, partial windows stored
    db.begin_recording("m", 1)
    partial = db.add_embeddings("m", _rows(1, 3, seed=1))
    assert db.done_recordings("m")["recording_id"].tolist() == [0]
    done = db.done_recordings("m").iloc[0]
    assert (done["n_windows"], done["size"], done["mtime"]) == (4, 10, 1.5)
    # rerun in a fresh process-like handle
    again = index.connect(db.path)
    again.begin_recording("m", 1)
    assert again.windows("m").count_rows("recording_id = 1") == 0
    ids = np.concatenate(
        [
            again.add_embeddings("m", _rows(1, 3, seed=1)),
            again.add_embeddings("m", _rows(1, 3, seed=2)),
        ]
    )
    with pytest.raises(RuntimeError, match="expected 5"):
        again.finish_recording("m", 1, 5)
    again.finish_recording("m", 1, 6)
    assert again.done_recordings("m")["recording_id"].tolist() == [0, 1]
    table = again.windows("m").to_arrow()
    wid = table["window_id"].to_numpy()
    assert len(np.unique(wid)) == len(wid) == 10
    assert not set(ids) & set(partial)  # deleted ids are never handed out again
    assert set(first) <= set(wid)
    # re-embedding a done recording starts clean again
    again.begin_recording("m", 0)
    assert again.done_recordings("m")["recording_id"].tolist() == [1]
    assert again.windows("m").count_rows("recording_id = 0") == 0


def test_zero_vectors_are_stored_as_zero(db):
    rows = _rows(0, 3)
    rows.at[1, "vector"] = np.zeros(DIM, np.float32)  # digital silence
    ids = db.add_embeddings("m", rows)
    _, vec = db.vectors("m", ids)
    assert not vec[1].any() and np.linalg.norm(vec[0]) == pytest.approx(1.0)
    hits = db.search("m", np.stack(rows["vector"])[0]).exact().limit(3).to_pandas()
    assert hits.set_index("window_id").loc[ids[1], "score"] == 0.0
    with pytest.raises(ValueError, match="zero length"):
        db.search("m", np.zeros(DIM)).to_pandas()


def test_delete_recording_removes_windows_progress_and_labels(db, tmp_path):
    from index.labels import add_label, list_labels

    db.add_embeddings("m", _rows(0, 3))
    db.add_embeddings("m", _rows(1, 2))
    db.finish_recording("m", 1, 2)
    add_label(db, 0, 1.0, 2.0, "owl")
    add_label(db, 1, 1.0, 2.0, "wren")
    db.delete_recording(1)
    assert db.windows("m").count_rows() == 3
    assert db.done_recordings("m").empty
    assert db.recordings()["recording_id"].tolist() == [0]
    assert list_labels(db)["label"].tolist() == ["owl"]
    # the next file gets a fresh id: a label naming the old one could never attach to it
    assert db.upsert_recording(tmp_path / "audio", "c.wav") == 2
    assert index.connect(db.path).upsert_recording(tmp_path / "audio", "d.wav") == 3


_ADD_MANY = """
import sys
import numpy as np
import index
db = index.connect(sys.argv[1])
for i in range(60):
    vec = np.random.default_rng(i).normal(size=(1, 16)).astype(np.float32)
    row = {"recording_id": [0], "start_s": [5.0 * i], "end_s": [5.0 * i + 5], "vector": vec}
    db.add_embeddings(sys.argv[2], row)
"""


def test_two_writer_processes_never_lose_an_id_reservation(db):
    # each process rewrites chorus.json for its own model; without the lock one of them loses
    # the other's high-water mark and a later run hands out window ids that are still indexed
    procs = [
        subprocess.Popen([sys.executable, "-c", _ADD_MANY, str(db.path), m]) for m in ("p", "q")
    ]
    assert [p.wait(120) for p in procs] == [0, 0]
    meta = index.connect(db.path).meta
    assert meta["next_window_id"] == {"p": 60, "q": 60}


def test_generic_tables_and_float16(db):
    schema = pa.schema([("label_id", pa.int64()), ("label", pa.string())])
    t = db.open_table("labels", schema)
    t.add(pa.table({"label_id": [1], "label": ["owl"]}, schema=schema))
    assert "labels" in db.table_names() and db.open_table("labels").count_rows() == 1
    with pytest.raises(KeyError, match="no table"):
        db.open_table("probes")
    db.register_model("half", {"dim": DIM}, vector_dtype="float16")
    db.add_embeddings("half", _rows(0, 4))
    assert db.windows("half").schema.field("vector").type.value_type == pa.float16()
    _, vec = db.vectors("half")
    assert vec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-3)


def test_info_summary(db, tmp_path):
    db.upsert_recording(tmp_path / "audio", "a.wav", start_time="2024-01-02 03:00:00")
    db.upsert_recording(tmp_path / "audio", "sub/b.wav", start_time="2024-02-03 04:00:00")
    db.mark_failed(tmp_path / "audio", "bad.wav", "cannot decode")
    db.add_embeddings("m", _rows(0, 5))
    db.finish_recording("m", 0, 5)
    info = db.info()
    assert (info["n_recordings"], info["n_failed"]) == (2, 1)
    assert info["hours"] == pytest.approx(1.5)
    assert info["sites"] == ["A", "B"]
    assert (info["date_min"], info["date_max"]) == ("2024-01-02T03:00:00", "2024-02-03T04:00:00")
    assert info["failed"][0]["error"] == "cannot decode"
    assert info["failed"][0]["path"].endswith("bad.wav")
    m = info["models"]["m"]
    assert (m["n_windows"], m["n_recordings_done"], m["dim"]) == (5, 1, DIM)
    assert m["index_state"]["state"] == "none" and m["index"].startswith("none")
    db.add_embeddings("m", _rows(1, 2))
    db.build_index("m")
    db.add_embeddings("m", _rows(1, 1))
    assert db.info()["models"]["m"]["index"] == "SQfp16 over 7 windows, stale (+1 new, -0 deleted)"


def test_undated_recordings_are_counted_not_hidden_behind_a_range(tmp_path):
    from index.summary import describe_dates, recording_counts

    db = index.connect(tmp_path / "undated.chorus")

    db.upsert_recording(tmp_path / "audio", "a.wav", start_time="2025-02-22 06:00:00")
    for name in ("b.wav", "c.wav"):
        db.upsert_recording(tmp_path / "audio", name)
    db.mark_failed(tmp_path / "audio", "bad.wav", "cannot decode")
    counts = recording_counts(db.recordings())
    assert (counts["n_recordings"], counts["n_failed"], counts["n_dated"]) == (3, 1, 1)
    assert describe_dates(counts) == "1 of 3 recordings dated: 2025-02-22 06:00:00"
    info = db.info()
    assert {k: info[k] for k in counts} == counts  # `chorus info` uses the same definition
    assert describe_dates({**counts, "n_dated": 0}).startswith("no recording dated")
    assert describe_dates({**counts, "n_recordings": 1}).endswith("(all 1 recordings dated)")


def test_index_package_does_not_import_torch():
    code = "import sys, index; assert 'torch' not in sys.modules and 'embedder' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_per_model_extras_such_as_logits_are_stored_with_the_windows(db):
    rows = _rows(0, 3).assign(logits=list(np.arange(6, dtype=np.float64).reshape(3, 2)))
    rows["loudness"] = [0.5, 1.0, 1.5]
    db.add_embeddings("m", rows)
    got = db.windows("m").to_pandas()
    assert np.stack(got["logits"]).tolist() == [[0, 1], [2, 3], [4, 5]]
    assert got["loudness"].tolist() == [0.5, 1.0, 1.5]
    with pytest.raises(ValueError, match=r"stores extra columns \{'logits': 2, 'loudness': 0\}"):
        db.add_embeddings("m", _rows(1, 2))  # the first write fixed the extras
    with pytest.raises(ValueError, match="computed by the database"):
        db.add_embeddings("n", _rows(1, 2).assign(norm=1.0))
