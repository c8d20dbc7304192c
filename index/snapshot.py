"""A consistent, read-only view of one embeddings table at one LanceDB version.

Searches pin a snapshot so that a concurrent writer (ingest) cannot change the rows between
the id lookup, the vector reads and the result assembly.  Row *offsets* below are positions
in the snapshot's scan order. Vectors are read in place from the table's mapped data files
(:mod:`index.vector_view`) where their layout allows, else through ``take``.

A snapshot opened from its cache file (:meth:`Snapshot.from_file`) opens the Lance dataset
only when something needs it (a ``take``, a full read without a view).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import snapshot_cache
from .rows import vectors_to_numpy
from .schema import WINDOW_META_COLUMNS
from .vector_view import VectorView, open_recorded_view, open_view

READ_BATCH_ROWS = 8192  # rows per Arrow batch when streaming vectors (~50 MB at 1536-d float32)
TAKE_CHUNK = 20_000  # offsets per take request
log = logging.getLogger(__name__)


def _load_kept(cache: Path | None, model: str, table) -> snapshot_cache.Kept | None:
    """The snapshot cache file of this version, or None."""
    if cache is None:
        return None
    try:
        return snapshot_cache.load(cache, model, table)
    except (AttributeError, OSError, RuntimeError, ValueError) as exc:  # an unreadable manifest
        log.warning("snapshot cache not used: %s", exc)
        return None


class Snapshot:
    """Window metadata of ``embeddings_<model>`` at ``version``, with vector access.

    Attributes
    ----------
    window_id, recording_id, channel, start_s, end_s : np.ndarray, shape (n,)
        Columns in offset order.
    """

    def __init__(self, model: str, table, version: int, cache: Path | None = None):
        self._table = table  # a lance.LanceDataset checked out at `version` (read-only)
        self._open_table: Callable[[int], object] | None = None
        self.stamp: tuple[int, int] | None = None  # see Database.snapshot
        kept = _load_kept(cache, model, table)
        if kept is not None:
            cols, layout = kept.columns, kept.layout
        else:
            meta = table.to_table(columns=list(WINDOW_META_COLUMNS), with_row_address=True)
            cols = {name: meta[name].to_numpy() for name in WINDOW_META_COLUMNS}
            cols["row_addr"] = meta["_rowaddr"].to_numpy()
            layout = None
        dim = int(table.schema.field("vector").type.list_size)
        self._set_columns(model, version, dim, cols, layout)
        self.root = str(table.uri)
        self.kept_file = None if kept is None else kept.path  # the cache file, checked
        if kept is None and cache is not None and len(self) >= snapshot_cache.MIN_ROWS:
            view = self.vector_view()
            columns = {
                "row_addr": self._row_addr,
                **{n: getattr(self, n) for n in WINDOW_META_COLUMNS},
            }
            layout = view and view.layout()
            self.kept_file = snapshot_cache.save(cache, model, table, columns, layout)

    @classmethod
    def from_file(
        cls,
        model: str,
        current: snapshot_cache.Current,
        root: str,
        open_table: Callable[[int], object],
    ) -> Snapshot:
        """The snapshot a :func:`snapshot_cache.current` file holds, of the table at ``root``;
        ``open_table(version)`` gives its Lance dataset when one is needed."""
        snap = cls.__new__(cls)
        snap._table, snap._open_table, snap.stamp = None, open_table, None
        kept = current.kept
        snap._set_columns(model, current.version, current.dim, kept.columns, kept.layout)
        snap.root, snap.kept_file = root, kept.path
        return snap

    def _set_columns(self, model: str, version: int, dim: int, cols: dict, layout) -> None:
        self.model = model
        self.version = int(version)
        self.dim = dim
        self._view: VectorView | None | bool = False  # False: not opened yet
        self._layout = layout  # a stored vector layout to open the view from
        self._row_addr = cols["row_addr"]  # (n,) fragment id << 32 | physical row
        self.window_id = cols["window_id"].astype(np.int64, copy=False)
        self.recording_id = cols["recording_id"].astype(np.int64, copy=False)
        self.channel = cols["channel"].astype(np.int32, copy=False)
        self.start_s = cols["start_s"].astype(np.float64, copy=False)
        self.end_s = cols["end_s"].astype(np.float64, copy=False)
        ids = self.window_id
        if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):  # ingest appends rising ids
            self._order = np.arange(len(ids))
            self._sorted_ids = ids
        else:
            self._order = np.argsort(ids, kind="stable")
            self._sorted_ids = ids[self._order]

    @property
    def table(self):
        """The ``lance.LanceDataset`` at this snapshot's version (opened on first use)."""
        if self._table is None:
            self._table = self._open_table(self.version)
        return self._table

    def __len__(self) -> int:
        return len(self.window_id)

    def offsets(self, window_ids, missing: str = "raise") -> np.ndarray:
        """Offsets (m,) of ``window_ids``; ``missing="raise"`` errors on unknown ids, "drop" skips."""
        ids = np.asarray(window_ids, np.int64).ravel()
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, max(len(self._sorted_ids) - 1, 0))
        found = (
            (self._sorted_ids[pos] == ids) if len(self._sorted_ids) else np.zeros(len(ids), bool)
        )
        if not found.all():
            if missing == "raise":
                bad = ids[~found][:5].tolist()
                raise KeyError(
                    f"window id(s) {bad} not in embeddings_{self.model} (version {self.version})"
                )
            pos = pos[found]
        return self._order[pos]

    def contains(self, window_ids) -> np.ndarray:
        """Boolean mask (m,): which ``window_ids`` exist in this snapshot."""
        ids = np.asarray(window_ids, np.int64).ravel()
        if not len(self._sorted_ids):
            return np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return self._sorted_ids[pos] == ids

    def vector_view(self) -> VectorView | None:
        """The table's vectors mapped in place, or None where its files do not allow it."""
        if self._view is False:
            view = None
            if self._table is None:  # from the cache file: its layout was checked when kept
                view = open_recorded_view(self.root, self._row_addr, self.dim, self._layout)
            if view is None:
                view = open_view(self.table, self._row_addr, self.dim, self._layout)
            self._view = view
        return self._view

    def vectors_at(self, offsets) -> np.ndarray:
        """Unit vectors (m, dim) float32 of rows at ``offsets``, in the given order."""
        offsets = np.asarray(offsets, np.int64).ravel()
        out = np.empty((len(offsets), self.dim), np.float32)
        if not len(offsets):
            return out
        view = self.vector_view()
        if view is not None:
            return view.rows(offsets)
        order = np.argsort(offsets, kind="stable")  # reads in offset order are the cheapest
        sorted_offs = offsets[order]
        uniq, inverse = np.unique(sorted_offs, return_inverse=True)
        chunks = []
        for i in range(0, len(uniq), TAKE_CHUNK):
            part = uniq[i : i + TAKE_CHUNK]
            got = self.table.take(part.tolist(), columns=["window_id", "vector"])
            if got.num_rows != len(part) or not np.array_equal(
                got["window_id"].to_numpy(), self.window_id[part]
            ):
                raise RuntimeError("LanceDB returned unexpected rows for an offset read")
            chunks.append(vectors_to_numpy(got["vector"]))
        vec = np.concatenate(chunks)  # (u, dim)
        out[order] = vec[inverse]
        return out

    def scores_at(self, offsets, q: np.ndarray) -> np.ndarray:
        """Inner products (m,) of the rows at ``offsets`` with one unit query ``q`` (dim,)."""
        view = self.vector_view()
        if view is not None:
            return view.scores(offsets, q)
        return self.vectors_at(offsets) @ np.asarray(q, np.float32)

    def iter_vectors(
        self, batch_rows: int = READ_BATCH_ROWS
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (window_ids (b,), unit vectors (b, dim) float32) over the whole snapshot."""
        view = self.vector_view()
        if view is not None:
            for offsets, vec in view.iter_rows(batch_rows):
                yield self.window_id[offsets], vec
            return
        reader = self.table.to_batches(columns=["window_id", "vector"], batch_size=batch_rows)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            yield (
                batch.column("window_id").to_numpy().astype(np.int64),
                vectors_to_numpy(batch.column("vector")),
            )
