"""Vectors read in place from Lance's data files: the same values as ``take``, or no view."""

from __future__ import annotations

import gc
import multiprocessing
import os

import faiss
import lance
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import index
from index import vector_layout as vl
from index import vector_view as vv
from index.snapshot import Snapshot

DIM = 128  # 256 bytes a float16 vector: Lance's full-zip pages (small values go in mini-blocks)


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _rows(vec: np.ndarray, rid0: int = 0) -> pd.DataFrame:
    starts = (np.arange(len(vec)) % 50) * 5.0
    return pd.DataFrame(
        {
            "recording_id": rid0 + np.arange(len(vec)) // 50,
            "start_s": starts,
            "end_s": starts + 5.0,
            "vector": list(vec),
        }
    )


@pytest.fixture(params=["float16", "float32"])
def db(request, tmp_path):
    """Four commits (fragments) of 300 windows, then recording 2's windows deleted."""
    db = index.connect(tmp_path / "v.chorus")
    db.register_model("m", {"name": "m", "dim": DIM}, vector_dtype=request.param)
    for i in range(4):
        db.add_embeddings("m", _rows(_unit(300, seed=i), rid0=10 * i))
    db.delete_windows("m", 2)
    return db


def _take(snap: Snapshot, offsets) -> np.ndarray:
    """The vectors ``take`` returns, with the view switched off."""
    view, snap._view = snap._view, None
    try:
        return snap.vectors_at(offsets)
    finally:
        snap._view = view


@pytest.mark.parametrize("share", [0, 10**9], ids=["pread", "mapped"])
def test_rows_equal_take_across_fragments_and_deletions(db, monkeypatch, share):
    monkeypatch.setattr(vv, "PREAD_SHARE", share)  # 0: scattered rows by pread; 10**9: mapped
    snap = db.snapshot("m")
    view = snap.vector_view()
    assert view is not None and len(view.phys_of_off) == len(snap) == 1150
    stored = snap.table.schema.field("vector").type.value_type.to_pandas_dtype()
    assert view.dtype == np.dtype(stored)
    offsets = np.random.default_rng(1).permutation(len(snap))[:400]
    np.testing.assert_array_equal(snap.vectors_at(offsets), _take(snap, offsets))
    # deleted rows are physical rows without an offset, and no offset maps onto them
    assert (view.off_of_phys < 0).sum() == 50
    assert np.array_equal(view.off_of_phys[view.phys_of_off], np.arange(len(snap)))


def test_scores_equal_numpy(db):
    snap = db.snapshot("m")
    q = _unit(1, seed=9)[0]
    offsets = np.arange(0, len(snap), 7)
    want = _take(snap, offsets) @ q
    np.testing.assert_allclose(snap.scores_at(offsets, q), want, atol=1e-6)


@pytest.mark.parametrize("reader", ["two threads", "one thread"])
def test_shortlist_scores_reuse_their_buffers_and_equal_numpy(db, monkeypatch, reader):
    monkeypatch.setattr(vv, "PREAD_SHARE", 0)  # every row by pread
    monkeypatch.setattr(vv, "SPLIT_READS_MIN", 16)
    if reader == "one thread":  # a one-core machine
        monkeypatch.setattr(vv, "_CORES", 1)
    else:
        monkeypatch.setattr(vv, "_CORES", 2)
    snap = db.snapshot("m")
    assert snap.vector_view() is not None  # its sample check read rows the same way
    every = _take(snap, np.arange(len(snap)))
    q = _unit(1, seed=5)[0]
    rng = np.random.default_rng(3)
    for m in (300, 20, 1100, 7, 300):  # the kept buffers shrink to no call and grow past 1024
        offsets = rng.choice(len(snap), m, replace=False)
        np.testing.assert_allclose(snap.scores_at(offsets, q), every[offsets] @ q, atol=1e-6)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform"
)
@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # the child reads no Lance table
def test_a_forked_child_reads_long_shortlists(db, monkeypatch):
    monkeypatch.setattr(vv, "PREAD_SHARE", 0)
    monkeypatch.setattr(vv, "SPLIT_READS_MIN", 16)
    monkeypatch.setattr(vv, "_CORES", 2)
    snap = db.snapshot("m")
    offsets = np.arange(0, len(snap), 3)
    q = _unit(1, seed=6)[0]
    want = snap.scores_at(offsets, q)  # the parent's reader thread runs from here on

    def child():  # its own reader, or it would wait forever for the parent's thread
        faiss.omp_set_num_threads(1)  # the parent's OpenMP threads are not in the child either
        if not np.allclose(snap.scores_at(offsets, q), want, atol=1e-6):
            raise SystemExit(1)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        pytest.fail("the forked child hung reading a shortlist")
    assert proc.exitcode == 0


def test_exact_top_equals_a_numpy_reference(db):
    snap = db.snapshot("m")
    view = snap.vector_view()
    every = _take(snap, np.arange(len(snap)))  # (n, dim)
    q = _unit(3, seed=5)
    allowed = snap.recording_id % 3 == 0
    for mask in (None, allowed):
        scores, offsets = view.exact_top(q, 10, mask)
        for j in range(len(q)):
            s = every @ q[j]
            if mask is not None:
                s = np.where(mask, s, -np.inf)
            want = np.argsort(-s, kind="stable")[:10]
            assert offsets[j].tolist() == want.tolist()
            np.testing.assert_allclose(scores[j], s[want], atol=1e-5)


def test_exact_search_reads_the_view_not_the_table(db, monkeypatch):
    snap = db.snapshot("m")
    monkeypatch.setattr(Snapshot, "iter_vectors", lambda *a, **k: pytest.fail("table scan"))
    q = _unit(1, seed=3)[0]
    got = db.search("m", q).exact().limit(5).to_pandas()
    every = _take(snap, np.arange(len(snap)))
    want = snap.window_id[np.argsort(-(every @ q), kind="stable")[:5]]
    assert got["window_id"].tolist() == want.tolist()


def test_more_files_than_kept_open(db, monkeypatch):
    monkeypatch.setattr(vv, "OPEN_FILES_MAX", 1)
    snap = db.snapshot("m")
    offsets = np.random.default_rng(2).permutation(len(snap))
    np.testing.assert_array_equal(snap.vectors_at(offsets), _take(snap, offsets))
    assert len(snap.vector_view()._files) <= 1


def test_added_column_keeps_the_view(tmp_path):
    path = tmp_path / "t.lance"
    vec = _unit(200).astype(np.float16)
    table = pa.table(
        {
            "window_id": pa.array(np.arange(200), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM),
        }
    )
    ds = lance.write_dataset(table, path)
    ds.add_columns({"extra": "window_id * 2"})  # a second data file per fragment
    ds = lance.dataset(path)
    addr = ds.to_table(columns=["window_id"], with_row_address=True)["_rowaddr"].to_numpy()
    view = vv.open_view(ds, addr, DIM)
    assert view is not None
    np.testing.assert_array_equal(view.rows(np.arange(200)), vec.astype(np.float32))


def test_other_layouts_give_no_view_and_searches_still_answer(tmp_path, monkeypatch):
    path = tmp_path / "old.lance"
    vec = _unit(100)
    table = pa.table(
        {
            "window_id": pa.array(np.arange(100), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM),
        }
    )
    ds = lance.write_dataset(table, path, data_storage_version="2.0")  # the older encoding
    addr = ds.to_table(columns=["window_id"], with_row_address=True)["_rowaddr"].to_numpy()
    assert vv.open_view(ds, addr, DIM) is None


def test_small_vectors_in_mini_blocks_give_no_view(tmp_path):
    db = index.connect(tmp_path / "s.chorus")
    db.register_model("m", {"name": "m", "dim": 16}, vector_dtype="float16")  # 32 bytes each
    x = np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32)
    db.add_embeddings(
        "m",
        pd.DataFrame(
            {
                "recording_id": 0,
                "start_s": np.arange(100.0),
                "end_s": np.arange(100.0) + 1,
                "vector": list(x),
            }
        ),
    )
    snap = db.snapshot("m")
    assert snap.vector_view() is None
    got = snap.vectors_at([3, 1])  # through take
    np.testing.assert_allclose(
        got, x[[3, 1]] / np.linalg.norm(x[[3, 1]], axis=1, keepdims=True), atol=2e-3
    )


def test_a_misread_layout_is_caught_by_the_sample_check(db, monkeypatch):
    plain = vl._plain_page

    def shifted(encoding, buffers, dim):  # one value off: what a layout misread would give
        got = plain(encoding, buffers, dim)
        return None if got is None else (got[0] - 1, got[1] + got[2](0).itemsize * dim, got[2])

    vl._LAYOUTS.clear()
    monkeypatch.setattr(vl, "_plain_page", shifted)
    snap = db.snapshot("m")
    snap._view = False
    try:
        assert snap.vector_view() is None
        # the search still answers, through take
        q = _unit(1, seed=4)[0]
        got = db.search("m", q).exact().limit(3).to_pandas()
        every = _take(snap, np.arange(len(snap)))
        assert got["window_id"].tolist() == snap.window_id[np.argsort(-(every @ q))[:3]].tolist()
    finally:
        vl._LAYOUTS.clear()


def test_remote_uri_gives_no_view():
    class Remote:
        uri = "s3://bucket/table.lance"

    assert vv.open_view(Remote(), np.zeros(0, np.uint64), DIM) is None


def test_streaming_every_vector_matches_the_arrow_read(db):
    snap = db.snapshot("m")
    mapped = list(snap.iter_vectors(batch_rows=128))
    view, snap._view = snap._view, None
    try:
        arrow = list(snap.iter_vectors(batch_rows=128))
    finally:
        snap._view = view
    ids = np.concatenate([i for i, _ in mapped])
    assert ids.tolist() == np.concatenate([i for i, _ in arrow]).tolist()  # scan order, no deleted
    assert len(ids) == len(snap) and max(len(i) for i, _ in mapped) <= 128
    np.testing.assert_array_equal(
        np.concatenate([v for _, v in mapped]), np.concatenate([v for _, v in arrow])
    )


def test_without_preadv_rows_come_from_the_mapping(db, monkeypatch):
    monkeypatch.setattr(vv, "PREAD_SHARE", 0)
    monkeypatch.delattr(vv.os, "preadv")  # as on Windows
    snap = db.snapshot("m")
    offsets = np.arange(0, len(snap), 97)
    np.testing.assert_array_equal(snap.vectors_at(offsets), _take(snap, offsets))


def _lance_table(path, vec: np.ndarray, batch_rows: int | None = None, **kw):
    """A Lance table of ``vec``; written from batches of ``batch_rows`` (a page each)."""
    table = pa.table(
        {
            "window_id": pa.array(np.arange(len(vec)), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), vec.shape[1]),
        }
    )
    if batch_rows:
        batches = table.to_batches(max_chunksize=batch_rows)
        table = pa.RecordBatchReader.from_batches(table.schema, batches)
    return lance.write_dataset(table, path, **kw)


def _open(ds, dim: int = DIM):
    addr = ds.to_table(columns=["window_id"], with_row_address=True)["_rowaddr"].to_numpy()
    return vv.open_view(ds, addr, dim)


def test_a_dropped_and_re_added_column_reads_the_new_vectors(tmp_path):
    old = _unit(300)
    new = _unit(300, seed=1)
    ds = _lance_table(tmp_path / "t.lance", old)
    ds.drop_columns(["vector"])  # the old data file still holds the old vectors
    schema = pa.schema([pa.field("vector", pa.list_(pa.float32(), DIM))])

    @lance.batch_udf(output_schema=schema)
    def re_embed(batch):
        ids = batch["window_id"].to_numpy()
        return pa.record_batch(
            [pa.FixedSizeListArray.from_arrays(pa.array(new[ids].ravel()), DIM)], names=["vector"]
        )

    ds.add_columns(re_embed, read_columns=["window_id"])
    view = _open(lance.dataset(tmp_path / "t.lance"))
    assert view is not None
    np.testing.assert_array_equal(view.rows(np.arange(300)), new)


def test_several_pages_per_fragment(tmp_path):
    dim = 256
    vec = np.random.default_rng(2).standard_normal((6000, dim)).astype(np.float32)
    ds = _lance_table(tmp_path / "p.lance", vec, max_rows_per_file=4000, batch_rows=500)
    ds.delete("window_id % 7 = 3")
    ds = lance.dataset(tmp_path / "p.lance")
    view = _open(ds, dim)
    assert view is not None and len(view.pages) > len(ds.get_fragments())
    ids = ds.to_table(columns=["window_id"])["window_id"].to_numpy()
    offsets = np.random.default_rng(0).permutation(len(ids))[:700]
    np.testing.assert_array_equal(view.rows(offsets), vec[ids[offsets]])
    got = np.concatenate([o for o, _ in view.iter_rows(500)])
    assert got.tolist() == list(range(len(ids)))
    scores, top = view.exact_top(vec[[5]], 5)
    assert top[0].tolist() == np.argsort(-(vec[ids] @ vec[5]), kind="stable")[:5].tolist()


def test_a_damaged_vector_scores_nan_and_leaves_the_others_right(tmp_path):
    vec = _unit(50).astype(np.float16)
    vec[7, 0] = np.nan
    vec[9, 3] = np.inf
    view = _open(_lance_table(tmp_path / "n.lance", vec))
    q = _unit(1, seed=3)[0]
    got = view.scores(np.arange(50), q)
    want = vec.astype(np.float32) @ q
    ok = np.isfinite(want)
    assert np.isnan(got[~ok]).all()
    np.testing.assert_allclose(got[ok], want[ok], atol=1e-5)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_dropped_view_closes_its_files(db):
    def open_data_files() -> int:
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            try:  # the listing's own descriptor is gone by now
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            found += link.startswith(str(db.path)) and link.endswith(".lance")
        return found

    gc.collect()
    snap = db.snapshot("m")
    snap._view = False
    snap.vectors_at(np.arange(0, len(snap), 50))
    snap.vector_view().exact_top(_unit(1), 5)  # keeps its pages mapped
    assert snap.vector_view()._kept and open_data_files() > 0
    snap._view = False  # what a new table version does: the old view is dropped
    gc.collect()
    assert open_data_files() == 0


def test_per_recording_exact_search_scans_the_pages_twice_at_most(db, monkeypatch):
    snap = db.snapshot("m")
    view = snap.vector_view()
    calls = []
    scan = view.exact_top
    monkeypatch.setattr(view, "exact_top", lambda *a: calls.append(a[1]) or scan(*a))
    monkeypatch.setattr("index.search.OVERSAMPLE", 1)  # start at k = 23: k doubles 3 times
    # a query near every window of one recording: most top hits share it, so k has to grow
    q = _take(snap, np.flatnonzero(snap.recording_id == 10)).sum(axis=0)
    q /= np.linalg.norm(q)
    got = db.search("m", q).exact().per_recording(1).limit(23).to_pandas()
    assert len(calls) == 2 and got["recording_id"].is_unique and len(got) == 23
    snap._view = None  # the same search through take
    want = db.search("m", q).exact().per_recording(1).limit(23).to_pandas()
    assert got["window_id"].tolist() == want["window_id"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)


AVX512_KERNELS = ("skylake", "ice", "genoa", "sapphire", "turin")


@pytest.fixture(params=["best", "avx2", "faiss"])
def kernel(request, monkeypatch):
    """Exact scans through SimSIMD's best kernel here, its AVX2 kernel, or FAISS's copy."""
    if request.param == "faiss":
        monkeypatch.setattr(vv, "simsimd", None)
    elif vv.simd_status() is not None:
        pytest.skip(vv.simd_status())
    if request.param != "avx2":
        yield request.param
        return
    caps = vv.simsimd.get_capabilities()
    if not caps.get("haswell"):
        pytest.skip("this CPU has no AVX2 + F16C kernel in simsimd")
    turned_off = [c for c in AVX512_KERNELS if caps.get(c)]
    for c in turned_off:
        vv.simsimd.disable_capability(c)
    try:
        yield request.param
    finally:
        for c in turned_off:
            vv.simsimd.enable_capability(c)


def _near_ties(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A query and ``n`` float16 unit rows whose scores are packed within ~1e-4 while half of
    them lean along, half against, the query's float16 rounding error: scoring with the rounded
    query reorders them."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(dim)
    q /= np.linalg.norm(q)
    err = q - q.astype(np.float16).astype(np.float64)
    err -= (err @ q) * q  # the rounding error's direction across q
    err /= np.linalg.norm(err)
    side = np.where(np.arange(n) % 2, 1.0, -1.0)[:, None]  # (n, 1)
    cos = 0.9 + 1e-4 * rng.random((n, 1))
    rows = cos * q + np.sqrt(1 - cos**2) * (side * err + 0.01 * rng.standard_normal((n, dim)))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return q.astype(np.float32), rows.astype(np.float16)


@pytest.mark.parametrize("files", [1, 3])
@pytest.mark.parametrize("mask", ["none", "most", "few"])
def test_exact_scan_equals_float32_queries_whatever_the_kernel(tmp_path, kernel, mask, files):
    dim = 256
    q, vec = _near_ties(3000, dim)
    vec[11, 0] = np.nan  # a damaged row: never ranked
    view = _open(_lance_table(tmp_path / "t.lance", vec, max_rows_per_file=3000 // files), dim)
    assert view is not None and len(view.pages) == files
    rng = np.random.default_rng(1)
    allowed = {"none": None, "most": rng.random(3000) < 0.9, "few": rng.random(3000) < 0.05}[mask]
    exact = vec.astype(np.float32) @ q  # (n,)
    exact = np.where(np.isnan(exact), -np.inf, exact)
    if allowed is not None:
        exact = np.where(allowed, exact, -np.inf)
    gaps = np.diff(np.sort(exact[np.isfinite(exact)])[-60:])
    assert gaps.min() < 1e-4  # ties closer than a float16 query's rounding can tell apart
    for k in (1, 50, 5000):
        scores, offsets = view.exact_top(q[None, :], k, allowed)
        ranked = np.count_nonzero(np.isfinite(exact))
        want = np.argsort(-exact, kind="stable")[: min(k, ranked)]
        got = offsets[0][offsets[0] >= 0]
        np.testing.assert_allclose(scores[0][: len(got)], exact[got], atol=2e-6)
        # equal scores may come in either order; the scores ranked must be the true ones
        np.testing.assert_allclose(np.sort(exact[got]), np.sort(exact[want]), atol=2e-6)
        assert len(got) == len(want) and 11 not in got.tolist()


@pytest.mark.parametrize("budget_pages", [0, 1, 100])
def test_exact_scans_keep_pages_mapped_within_the_budget(db, monkeypatch, budget_pages):
    view = db.snapshot("m").vector_view()
    page_bytes = max(p.rows for p in view.pages) * DIM * view.dtype.itemsize
    monkeypatch.setattr(vv, "KEPT_BYTES_MAX", budget_pages * page_bytes)
    maps = []
    real_mmap = vv.mmap.mmap
    monkeypatch.setattr(vv.mmap, "mmap", lambda *a, **k: maps.append(1) or real_mmap(*a, **k))
    every = view.rows(np.arange(len(view.phys_of_off)))
    q = _unit(2, seed=4)
    for _ in range(2):
        maps.clear()
        scores, offsets = view.exact_top(q, 7)
        for j in range(2):
            want = np.argsort(-(every @ q[j]), kind="stable")[:7]
            assert offsets[j].tolist() == want.tolist()
    kept = min(budget_pages, len(view.pages))
    assert len(view._kept) == kept
    assert len(maps) == len(view.pages) - kept  # the second scan maps only pages not kept


@pytest.mark.parametrize("mask", ["none", "few"])
def test_exact_scans_leave_the_openmp_thread_count_as_it_was(tmp_path, kernel, mask):
    """SimSIMD sets the calling thread's OpenMP count, which FAISS shares: it is put back."""
    import faiss

    q, vec = _near_ties(3000, 256)
    view = _open(_lance_table(tmp_path / "t.lance", vec, max_rows_per_file=1000), 256)
    allowed = None if mask == "none" else np.arange(3000) % 20 == 3
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)
    try:
        view.exact_top(q[None, :], 10, allowed)
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


def test_a_full_ranking_is_re_scored_in_chunks(tmp_path, kernel, monkeypatch):
    monkeypatch.setattr(vv, "RESCORE_ROWS", 7)  # a per-recording search ranks every window
    q, vec = _near_ties(500, 256)
    view = _open(_lance_table(tmp_path / "t.lance", vec), 256)
    scores, offsets = view.exact_top(q[None, :], 10_000)
    exact = vec.astype(np.float32) @ q
    assert sorted(offsets[0][offsets[0] >= 0].tolist()) == list(range(500))
    np.testing.assert_allclose(scores[0][:500], np.sort(exact)[::-1], atol=2e-6)


@pytest.mark.parametrize("share", [0.03, 0.7, 1.0])
def test_one_page_scan_keeps_only_allowed_rows(kernel, share):
    """A filtered scan of one page: masked in place when most rows are allowed, else a copy."""
    q, page = _near_ties(800, 128)
    allowed = np.random.default_rng(2).random(800) < share
    allowed[:3] = True
    scores, rows = vv._scan_page(page, q[None, :], 9, None if share == 1.0 else allowed)
    exact = np.where(allowed, page.astype(np.float32) @ q, -np.inf)
    want = np.argsort(-exact, kind="stable")[: min(9, int(allowed.sum()))]
    got = rows[0][rows[0] >= 0]
    assert allowed[got].all() and len(got) == len(want)
    np.testing.assert_allclose(np.sort(exact[got]), np.sort(exact[want]), atol=2e-6)
    np.testing.assert_allclose(scores[0][: len(got)], exact[got], atol=2e-6)
