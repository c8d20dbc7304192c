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
