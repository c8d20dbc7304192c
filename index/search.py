"""Similarity search over one model's windows: ``db.search(model, query)...to_pandas()``.

Rules
-----
* Query: one vector (dim,), several vectors (n, dim) or window ids (ints). Each positive is
  L2-normalised; the query is their normalised mean.
* Negatives (``.negatives(x, weight=0.5)``): q = normalise(mean(pos) - weight * mean(neg)),
  i.e. Rocchio-style query moving away from what the user rejected. Scores are the cosine
  similarity of every window with that final q, so ANN and exact searches rank identically.
* ``.where(sql)``: a LanceDB/DataFusion SQL predicate over :data:`FILTER_COLUMNS` (window
  and recording columns plus derived ``time``, ``hour``, ``date``). Small allowed sets are
  searched exactly; large ones by ANN with a selector, falling back to exact whenever the
  ANN returns fewer than k hits that exist.
* ``.per_recording(n)``: at most n hits per recording, and a hit overlapping in time a
  better hit of the same recording is dropped.
* ``.exclude_query()``: with window-id queries, drop the query windows and windows overlapping
  them in the same recording. ``.exclude_spans(spans)``: drop windows overlapping given spans of
  recordings (a query example taken from the archive), without a SQL filter.
* Results: :meth:`SearchBuilder.to_pandas`, or :meth:`SearchBuilder.to_arrow` (the same columns,
  a fraction of the cost: building a small DataFrame takes ~0.2 ms, more than the ANN search;
  and ``to_arrow`` never imports pandas, 45 MB and 0.15 s of a cold process).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pyarrow as pa

from .roots import abs_path
from .rows import arrow_column, normalise, vectors_to_numpy

if TYPE_CHECKING:  # imported by to_pandas: a search answered through to_arrow never loads it
    import pandas as pd

DEFAULT_K = 20  # hits returned when .limit() is not called
NEGATIVE_WEIGHT = 0.5  # weight of mean(negatives) subtracted from mean(positives)
EXACT_SUBSET_MAX = 20_000  # filtered sets up to this size are scored exactly
ANN_MIN_FRACTION = 0.02  # below this allowed share of the index, score the subset exactly
OVERSAMPLE = 4  # initial candidate multiple when hits may be dropped by post-filters
INDEX_PARAMS = ("nprobe", "efSearch", "k_factor")  # what .index_params() may set
RESULT_COLUMNS = [
    "window_id",
    "recording_id",
    "path",
    "abs_path",
    "site",
    "start_time",
    "channel",
    "start_s",
    "end_s",
    "score",
]


def outside_spans(spans: list[tuple[int, float | None, float | None]]) -> str | None:
    """SQL for ``where()`` keeping windows that overlap none of ``spans``.

    Parameters
    ----------
    spans : (recording_id, start_s, end_s) of query examples taken from the archive; a start of
        None means the whole recording.

    Returns
    -------
    str or None
        None when there is no span. A query's own windows would otherwise top its results with
        scores near 1.
    """
    parts = []
    for rid, start, end in spans:
        if start is None:
            parts.append(f"recording_id = {int(rid)}")
        else:
            parts.append(
                f"(recording_id = {int(rid)} AND start_s < {float(end)!r} "
                f"AND end_s > {float(start)!r})"
            )
    return f"NOT ({' OR '.join(parts)})" if parts else None


class SearchBuilder:
    """Chainable similarity search; nothing runs until :meth:`to_pandas`."""

    def __init__(self, db, model: str, query):
        self._db = db
        self._model = model
        self._query = query
        self._negatives = None
        self._neg_weight = NEGATIVE_WEIGHT
        self._where: str | None = None
        self._per_recording: int | None = None
        self._suppress_overlap = True
        self._exact = False
        self._exclude_query = False
        self._exclude_spans: list[tuple[int, float | None, float | None]] = []
        self._k = DEFAULT_K
        self._index_params: dict = {}

    def negatives(self, negatives, weight: float = NEGATIVE_WEIGHT) -> SearchBuilder:
        """Vectors (dim,) / (n, dim) or window ids to steer away from (see module rules)."""
        if weight < 0:
            raise ValueError("negative weight must be >= 0")
        self._negatives, self._neg_weight = negatives, float(weight)
        return self

    def where(self, sql: str) -> SearchBuilder:
        """SQL filter over FILTER_COLUMNS, e.g. ``"site = 'A' AND hour BETWEEN 4 AND 8"``,
        ``"time >= TIMESTAMP '2024-05-01 00:00:00'"``, ``"date = DATE '2024-05-01'"``,
        ``"path LIKE 'north/%'"``. Windows of recordings with no start time have null
        time/hour/date and never match conditions on them."""
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("where() needs a non-empty SQL predicate string")
        self._where = sql
        return self

    def per_recording(self, n: int = 1, suppress_overlap: bool = True) -> SearchBuilder:
        """Keep the best ``n`` hits per recording; drop hits overlapping a better one."""
        if int(n) < 1:
            raise ValueError("per_recording(n) needs n >= 1")
        self._per_recording, self._suppress_overlap = int(n), bool(suppress_overlap)
        return self

    def exact(self, flag: bool = True) -> SearchBuilder:
        """Bypass the ANN index: score every (allowed) window."""
        self._exact = bool(flag)
        return self

    def exclude_query(self, flag: bool = True) -> SearchBuilder:
        """Drop query windows (and their same-recording overlaps) from the hits."""
        self._exclude_query = bool(flag)
        return self

    def exclude_spans(self, spans) -> SearchBuilder:
        """Drop windows overlapping any of ``spans``: (recording_id, start_s, end_s), a start of
        None meaning the whole recording. What ``.where(outside_spans(spans))`` keeps, computed
        on the snapshot's columns instead of through the SQL filter engine."""
        for rid, start, end in spans:
            if start is None:
                self._exclude_spans.append((int(rid), None, None))
            else:
                self._exclude_spans.append((int(rid), float(start), float(end)))
        return self

    def index_params(self, **params: float) -> SearchBuilder:
        """Settings of this search's ANN index over those saved with it, to trade recall for
        speed: ``nprobe`` (IVF cells visited), ``efSearch`` (HNSW beam), ``k_factor`` (candidates
        re-ranked exactly per hit). E.g. ``.index_params(k_factor=40)``;
        ``db.index_state(model)["params"]`` gives the saved ones. Ignored by exact searches."""
        for name, value in params.items():
            if name not in INDEX_PARAMS:
                raise ValueError(
                    f"unknown index parameter {name!r} (known: {sorted(INDEX_PARAMS)})"
                )
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"index parameter {name} must be a number >= 1, got {value!r}")
        self._index_params = {**self._index_params, **params}
        return self

    def limit(self, k: int) -> SearchBuilder:
        """Number of hits to return (default DEFAULT_K)."""
        if int(k) < 1:
            raise ValueError("limit(k) needs k >= 1")
        self._k = int(k)
        return self

    # ------------------------------------------------------------------ execution
    def to_pandas(self) -> pd.DataFrame:
        """Run the search; DataFrame with RESULT_COLUMNS sorted by score (descending)."""
        import pandas as pd

        return pd.DataFrame(self._columns(), columns=RESULT_COLUMNS)

    def to_arrow(self) -> pa.Table:
        """Run the search; ``pyarrow.Table`` with RESULT_COLUMNS sorted by score (descending)."""
        cols = self._columns()
        arrays = [arrow_column(cols[name]) for name in RESULT_COLUMNS]
        return pa.Table.from_arrays(arrays, names=RESULT_COLUMNS)

    def _columns(self) -> dict[str, np.ndarray]:
        """Run the search; RESULT_COLUMNS -> arrays (k,)."""
        self._db.search_state.prefetch_ann(self._model)  # read while the table opens
        snap = self._db.snapshot(self._model)  # pinned: one version for the whole search
        q, query_offsets = self._query_vector(snap)
        allowed = self._allowed(snap)  # bool (n,) or None
        excluded = self._excluded(snap, query_offsets)
        if excluded is not None:
            allowed = ~excluded if allowed is None else allowed & ~excluded
        n_allowed = len(snap) if allowed is None else int(np.count_nonzero(allowed))
        engine = _Engine(self._db, snap, q, allowed, n_allowed, self._exact, self._index_params)
        k_fetch = self._k * (OVERSAMPLE if self._per_recording else 1)
        while True:
            scores, offsets = engine.top(k_fetch)
            keep = self._post_filter(snap, offsets)
            if len(keep) >= self._k or len(offsets) >= n_allowed or k_fetch >= n_allowed:
                break
            k_fetch *= 2
        keep = keep[: self._k]
        return self._result(snap, scores[keep], offsets[keep])

    def _parse(self, snap, value, what: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit vectors (m, dim) and offsets (m,) if given as window ids."""
        arr = np.asarray(value)
        if arr.dtype == object:
            arr = vectors_to_numpy(list(value))
        if arr.size == 0:
            raise ValueError(f"empty {what}")
        if arr.dtype.kind in "iu":
            offsets = snap.offsets(arr.ravel())
            return snap.vectors_at(offsets), offsets
        if arr.dtype.kind != "f":
            raise TypeError(f"{what} must be vectors (float) or window ids (int), got {arr.dtype}")
        vec = arr.reshape(1, -1) if arr.ndim == 1 else arr  # (m, dim)
        if vec.ndim != 2 or vec.shape[1] != snap.dim:
            raise ValueError(
                f"{what} has shape {arr.shape}; model {self._model!r} vectors have {snap.dim} dims"
            )
        return normalise(vec)[0], None

    def _query_vector(self, snap) -> tuple[np.ndarray, np.ndarray | None]:
        if len(snap) == 0:
            raise ValueError(f"model {self._model!r} has no windows to search")
        pos, offsets = self._parse(snap, self._query, "query")
        q = pos.mean(axis=0)  # (dim,)
        if self._negatives is not None and self._neg_weight > 0:
            neg, _ = self._parse(snap, self._negatives, "negatives")
            q = q / max(np.linalg.norm(q), 1e-12) - self._neg_weight * neg.mean(axis=0)
        norm = float(np.linalg.norm(q))
        if norm < 1e-6:
            raise ValueError("query and negatives cancel out: nothing left to search for")
        return (q / norm).astype(np.float32), offsets

    def _allowed(self, snap) -> np.ndarray | None:
        if self._where is None:
            return None
        from .filters import filter_offsets  # LanceDB's SQL engine: imported when a filter is used

        mask = np.zeros(len(snap), bool)
        mask[filter_offsets(self._db, snap, self._where)] = True
        return mask

    def _excluded(self, snap, query_offsets) -> np.ndarray | None:
        spans = list(self._exclude_spans)
        if self._exclude_query and query_offsets is not None:
            spans += [
                (snap.recording_id[off], snap.start_s[off], snap.end_s[off])
                for off in np.unique(query_offsets)
            ]
        if not spans:
            return None
        out = np.zeros(len(snap), bool)
        for rid, start, end in spans:
            same = snap.recording_id == rid
            if start is not None:
                same &= (snap.start_s < end) & (snap.end_s > start)
            out |= same
        if self._exclude_query and query_offsets is not None:
            out[query_offsets] = True
        return out

    def _post_filter(self, snap, offsets: np.ndarray) -> np.ndarray:
        """Indices into ``offsets`` kept by per_recording / overlap suppression (score order)."""
        if self._per_recording is None:
            return np.arange(len(offsets))
        kept: dict[int, list[int]] = {}
        keep = []
        for i, off in enumerate(offsets):
            rid = int(snap.recording_id[off])
            mine = kept.setdefault(rid, [])
            if len(mine) >= self._per_recording:
                continue
            if self._suppress_overlap and any(
                snap.start_s[off] < snap.end_s[o] and snap.start_s[o] < snap.end_s[off]
                for o in mine
            ):
                continue
            mine.append(off)
            keep.append(i)
        return np.asarray(keep, np.int64)

    def _result(self, snap, scores: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
        rid = snap.recording_id[offsets]
        rec = self._db.recordings_lookup(keep=True)  # for the next cold search
        at = np.minimum(
            np.searchsorted(rec["recording_id"], rid), max(len(rec["recording_id"]) - 1, 0)
        )
        known = (
            rec["recording_id"][at] == rid if len(rec["recording_id"]) else np.zeros(len(rid), bool)
        )

        def col(name, missing):
            values = rec[name][at] if len(rec[name]) else np.empty(len(rid), rec[name].dtype)
            return np.where(known, values, missing)

        paths, roots = col("path", None), col("audio_root", None)
        joined = np.array(  # for the hits only
            [None if p is None else abs_path(r, p) for r, p in zip(roots, paths, strict=True)],
            dtype=object,
        )
        return {
            "window_id": snap.window_id[offsets],
            "recording_id": rid,
            "path": paths,
            "abs_path": joined,
            "site": col("site", None),
            "start_time": col("start_time", np.datetime64("NaT", "us")),
            "channel": snap.channel[offsets],
            "start_s": snap.start_s[offsets],
            "end_s": snap.end_s[offsets],
            "score": scores.astype(np.float32),
        }


@contextlib.contextmanager
def _one_thread():
    """FAISS on one OpenMP thread in this thread (the setting is per thread): a one-query ANN
    search is ~0.2 ms of work, and waking a second thread costs more than it saves on a busy
    machine (0.22 vs 0.32 ms p50 at 100 k, benchmarks/RESULTS.md). Exact scans keep every thread."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class _Engine:
    """Produces the top candidates (scores desc, snapshot offsets) for one query vector."""

    def __init__(self, db, snap, q: np.ndarray, allowed, n_allowed: int, exact: bool, params: dict):
        self.db, self.snap, self.q, self.params = db, snap, q, params
        self.allowed, self.n_allowed = allowed, n_allowed
        ann = db.search_state.load_ann(snap.model)
        if ann is not None and ann.settings.dim != snap.dim:
            ann = None
        self.ann = None if exact else ann
        # the index's own copy of the vectors is the exact kernel (no scan through LanceDB)
        self.kernel = ann if ann is not None and ann.exact_storage else None
        self._all_scores = None
        self._view_top = None  # (scores, offsets) best first, from the mapped pages

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_allowed)
        if k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if self.ann is None or self._small_subset():
            return self._exact_top(k)
        got = self._ann_top(k)
        if got is None:  # the ANN could not return k allowed hits: be exact instead
            return self._exact_top(k)
        return got

    def _small_subset(self) -> bool:
        if self.allowed is None:
            return False
        small = ANN_MIN_FRACTION * len(self.snap)
        return self.n_allowed <= EXACT_SUBSET_MAX or self.n_allowed < small

    def _exact_top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kernel is not None:
            return self._kernel_top(k)
        view = self.snap.vector_view()
        if view is not None and not self._scored_subset():
            if self._view_top is None or len(self._view_top[0]) < k:
                # a scan of the mapped pages; a second, wider call (per-recording searches
                # double k) ranks every allowed window once instead of scanning again per k
                want = k if self._view_top is None else self.n_allowed
                s, offs = view.exact_top(self.q[None, :], want, self.allowed)
                found = offs[0] >= 0
                self._view_top = self._best_first(s[0][found], offs[0][found])
            return self._view_top[0][:k], self._view_top[1][:k]
        if self._all_scores is None:
            self._all_scores = self._exact_scores()
        scores = self._all_scores
        cand = np.flatnonzero(self.allowed) if self.allowed is not None else np.arange(len(scores))
        s = scores[cand]
        if k < len(s):
            part = np.argpartition(-s, k - 1)[:k]
            cand, s = cand[part], s[part]
        return self._best_first(s, cand)

    def _best_first(self, scores: np.ndarray, offsets: np.ndarray):
        """(scores, offsets) by score descending, ties by window id."""
        order = np.lexsort((self.snap.window_id[offsets], -scores))
        return scores[order], offsets[order]

    def _exact_scores(self) -> np.ndarray:
        """Cosine score of every snapshot row (n,), NaN where not allowed and not computed."""
        snap = self.snap
        scores = np.full(len(snap), np.nan, np.float32)
        if self._scored_subset():
            offs = np.flatnonzero(self.allowed)
            scores[offs] = self.db.search_state.scores_for(snap, offs, self.q)
            return scores
        for ids, vec in snap.iter_vectors():
            scores[snap.offsets(ids)] = vec @ self.q  # (b,)
        return scores

    def _scored_subset(self) -> bool:
        """Is the search filtered to few enough windows to score them one by one?"""
        return self.allowed is not None and self.n_allowed <= EXACT_SUBSET_MAX

    def _kernel_top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k``: FAISS scan of the index's stored vectors, plus the windows committed
        since it was built (read from LanceDB and scored here)."""
        return self._merged_top(k, self.kernel.exact_search)

    def _ann_top(self, k: int):
        return self._merged_top(k, functools.partial(self.ann.search, params=self.params), True)

    def _merged_top(self, k: int, search, check: bool = False):
        """Top ``k`` of ``search`` over the index's allowed positions and of exact scores of the
        windows not in it; None when ``check`` and the index returned too few hits."""
        ann = self.ann if check else self.kernel
        mapping = self.db.search_state.ann_mapping(self.snap, ann)  # off_of_pos (N,), new_offsets
        off_of_pos, new_offsets = mapping
        # every indexed window still in the table is one snapshot offset not in new_offsets:
        # an unfiltered search over an index without deletions needs no O(n) mask per query
        n_in_ann = len(self.snap) - len(new_offsets)
        mask = None
        if self.allowed is not None or n_in_ann < len(ann):
            mask = off_of_pos >= 0
            if self.allowed is not None:
                mask &= self.allowed[np.maximum(off_of_pos, 0)]
            n_in_ann = int(np.count_nonzero(mask))
            mask = None if n_in_ann == len(ann) else mask
        scores = np.empty(0, np.float32)
        offsets = np.empty(0, np.int64)
        if n_in_ann:
            want = min(k, n_in_ann)
            rerank = check and ann.tier.rerank_from_table
            settings = {**ann.settings.params, **self.params}
            fetch = min(ann.tier.shortlist(want, settings), n_in_ann) if rerank else want
            with _one_thread() if check else contextlib.nullcontext():
                s, pos = search(self.q[None, :], fetch, mask)
                s, pos = s[0], pos[0]
                valid = pos >= 0
                if int(valid.sum()) < want:
                    if check:
                        return None
                    raise RuntimeError("the exact index scan returned fewer hits than allowed")
                scores, offsets = s[valid], off_of_pos[pos[valid]]
                if rerank:  # codes only in RAM: exact scores from the shortlist's stored vectors
                    scores = self.snap.scores_at(offsets, self.q)
        if len(new_offsets):  # windows committed after the index was built: exact scores
            extra = new_offsets
            if self.allowed is not None:
                extra = extra[self.allowed[extra]]
            if len(extra):
                es = self.db.search_state.scores_for(self.snap, extra, self.q)
                scores = np.concatenate([scores, es])
                offsets = np.concatenate([offsets, extra])
        scores, offsets = self._best_first(scores, offsets)
        return scores[:k], offsets[:k]


class SearchState:
    """What the searches of one database keep between calls: each model's loaded FAISS index
    (until its settings file changes), the maps between index positions and snapshot offsets
    (per table version), vectors of windows committed after the index was built, and the joined
    views that ``.where()`` filters run on."""

    def __init__(self, db) -> None:
        # a weak reference: a cycle would leave the Database to the cyclic garbage collector,
        # which may run in LanceDB's event-loop thread, where the filter views' finalizer
        # (a blocking drop_table on that same loop) would deadlock
        self._db = weakref.ref(db)
        self.indexes: dict = {}  # model -> (settings mtime, AnnIndex | None)
        self.ann_maps: dict = {}  # model -> index position <-> snapshot offset maps
        self.filter_views: dict = {}  # model -> (key, memory table) used by .where()
        self._loading: dict[str, threading.Thread] = {}  # model -> its index being read
        self._settings: dict[str, str] = {}  # model -> its index settings file
        self._lock = threading.Lock()

    @property
    def db(self):
        return self._db()

    def forget(self, model: str) -> None:
        """Drop what is kept for ``model`` (its index was removed or replaced)."""
        self.indexes.pop(model, None)
        self.ann_maps.pop(model, None)

    def prefetch_ann(self, model: str) -> None:
        """Start reading ``model``'s saved index in a thread, unless it is loaded or being read.

        FAISS reads without holding the GIL, so a cold first search reads the index (80 ms for
        136 MB at a million windows) while it opens the table; :meth:`load_ann` waits for it."""
        with self._lock:
            if model in self._loading or model in self.indexes:
                return
            thread = threading.Thread(target=self._load_quietly, args=(model,), daemon=True)
            self._loading[model] = thread
        thread.start()

    def _load_quietly(self, model: str) -> None:
        with contextlib.suppress(Exception):  # load_ann, in the caller's thread, tries again
            self._load(model)

    def load_ann(self, model: str):
        """The saved FAISS index of ``model`` (cached until its settings file changes) or None."""
        with self._lock:
            thread = self._loading.pop(model, None)
        if thread is not None:
            thread.join()
        return self._load(model)

    def _load(self, model: str):
        from .ann import verified_index, warn_damaged
        from .faiss_index import AnnIndex

        json_path = self._settings.get(model)
        if json_path is None:
            json_path = self._settings[model] = str(
                AnnIndex.settings_path(self.db.faiss_dir, model)
            )
        try:
            stamp = os.stat(json_path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        cached = self.indexes.get(model)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ann, problem = (None, None)
        if stamp is not None:  # mapped, read-only: build_index loads its own writable copy
            ann, problem = verified_index(self.db, model, mmap=True)
        if problem:  # once per index generation: the result is cached below
            warn_damaged(model, problem)
        self.indexes[model] = (stamp, ann)
        self.ann_maps.pop(model, None)
        return ann

    def ann_mapping(self, snap, ann) -> tuple[np.ndarray, np.ndarray]:
        """(snapshot offset of each index position or -1 if deleted (N,), offsets not indexed)."""
        entry = self.ann_entry(snap, ann)
        return entry[1], entry[2]

    def ann_entry(self, snap, ann) -> tuple:
        """(key, off_of_pos, new_offsets, pos_of_off, delta vectors) for this snapshot and index;
        callers use the tuple they got, never the shared slot another thread may replace."""
        key = (snap.version, id(ann))
        cached = self.ann_maps.get(snap.model)
        if cached is None or cached[0] != key:
            if len(ann.ids) == len(snap) and np.array_equal(ann.ids, snap.window_id):
                same = np.arange(len(snap))  # the index covers this snapshot, in its order
                cached = (key, same, np.empty(0, np.int64), same, {})
                self.ann_maps[snap.model] = cached
                return cached
            present = snap.contains(ann.ids)
            off_of_pos = np.full(len(ann), -1, np.int64)
            off_of_pos[present] = snap.offsets(ann.ids[present])
            pos_of_off = np.full(len(snap), -1, np.int64)
            pos_of_off[off_of_pos[present]] = np.flatnonzero(present)
            new_offsets = np.flatnonzero(pos_of_off < 0)
            cached = (key, off_of_pos, new_offsets, pos_of_off, {})
            self.ann_maps[snap.model] = cached
        return cached

    def scores_for(self, snap, offsets: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Inner products (m,) of the unit vectors at snapshot ``offsets`` with ``q`` (dim,)."""
        ann = self.indexes.get(snap.model, (None, None))[1]
        if ann is None or not ann.exact_storage:
            return snap.scores_at(offsets, q)
        return self.vectors_for(snap, offsets) @ q

    def vectors_for(self, snap, offsets: np.ndarray) -> np.ndarray:
        """Unit vectors (m, dim) at snapshot ``offsets``: from the in-memory index when it stores
        them exactly, else from LanceDB (windows not in the index are cached per version)."""
        offsets = np.asarray(offsets, np.int64)
        ann = self.indexes.get(snap.model, (None, None))[1]
        if ann is None or not ann.exact_storage:
            return snap.vectors_at(offsets)
        _, _, _, pos_of_off, delta = self.ann_entry(snap, ann)
        pos = pos_of_off[offsets]
        out = np.empty((len(offsets), snap.dim), np.float32)
        inside = pos >= 0
        out[inside] = ann.reconstruct(pos[inside])
        rest = offsets[~inside]
        todo = [int(o) for o in rest if int(o) not in delta]
        if todo:
            for o, v in zip(todo, snap.vectors_at(np.asarray(todo)), strict=True):
                delta[o] = v
        if len(rest):
            out[~inside] = np.stack([delta[int(o)] for o in rest])
        return out
