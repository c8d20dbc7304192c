"""Readers see one committed version while an ingest is writing: never a half-written chunk."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

import index

DIM = 16
CHUNK = 40  # windows per commit
N_CHUNKS = 15


def test_search_during_ingest_sees_whole_commits_only(tmp_path):
    db = index.connect(tmp_path / "c.chorus")
    rid = db.upsert_recording(tmp_path, "long.wav", duration_s=1e5)
    rng = np.random.default_rng(0)
    q = rng.standard_normal(DIM).astype(np.float32)

    def chunk(i):
        starts = (i * CHUNK + np.arange(CHUNK)) * 5.0
        # every window of chunk i carries the value i in its first coordinate
        vec = np.abs(rng.standard_normal((CHUNK, DIM))).astype(np.float32) + 0.1
        vec[:, 0] = i + 1
        return pd.DataFrame({"recording_id": rid, "start_s": starts, "end_s": starts + 5.0,
                             "vector": list(vec)})  # fmt: skip

    db.add_embeddings("m", chunk(0))
    errors = []

    def write():
        try:
            writer = index.connect(tmp_path / "c.chorus")
            for i in range(1, N_CHUNKS):
                writer.add_embeddings("m", chunk(i))
        except Exception as err:  # surfaced by the main thread's assertion
            errors.append(err)

    thread = threading.Thread(target=write)
    thread.start()
    seen = set()
    reader = index.connect(tmp_path / "c.chorus")
    while thread.is_alive() or not seen or max(seen) < N_CHUNKS * CHUNK:
        hits = reader.search("m", q).exact().limit(N_CHUNKS * CHUNK).to_pandas()
        n = len(hits)
        assert n % CHUNK == 0, f"saw {n} windows: part of a commit"
        starts = np.sort(hits.start_s.to_numpy())
        np.testing.assert_array_equal(starts, np.arange(n) * 5.0)  # a prefix of whole chunks
        ids, vecs = reader.vectors("m", hits.window_id.to_numpy())
        assert np.isfinite(vecs).all() and len(ids) == n
        seen.add(n)
        if not thread.is_alive() and n == N_CHUNKS * CHUNK:
            break
    thread.join()
    assert not errors, errors
    assert max(seen) == N_CHUNKS * CHUNK
    assert len(seen) >= 2, "the reader never overlapped the writer"


def test_offsets_of_window_ids_in_any_order(tmp_path):
    """Rising window ids take a shortcut (no sort); ids out of order must give the same answers."""
    import lance
    import pyarrow as pa

    from index.snapshot import Snapshot

    for ids in ([1, 3, 5, 9], [5, 3, 9, 1]):
        n = len(ids)
        table = pa.table(
            {
                "window_id": pa.array(ids, pa.int64()),
                "recording_id": pa.array([0] * n, pa.int64()),
                "channel": pa.array([0] * n, pa.int32()),
                "start_s": pa.array(np.arange(n, dtype=float)),
                "end_s": pa.array(np.arange(n, dtype=float) + 1),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ones(n * 4, np.float32)), 4
                ),
            }
        )
        ds = lance.write_dataset(table, tmp_path / f"{ids[0]}.lance")
        snap = Snapshot("m", ds, ds.version)
        assert snap.offsets([9, 1]).tolist() == [ids.index(9), ids.index(1)]
        assert snap.contains([3, 4]).tolist() == [True, False]
        assert snap.offsets([4, 5], missing="drop").tolist() == [ids.index(5)]
