"""A consistent, read-only view of one embeddings table at one LanceDB version.

Searches pin a snapshot so that a concurrent writer (ingest) cannot change the rows between
the id lookup, the vector reads and the result assembly.  Row *offsets* below are positions
in the snapshot's scan order. Vectors are read in place from the table's mapped data files
(:mod:`index.vector_view`) where their layout allows, else through ``take``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .rows import vectors_to_numpy
from .schema import WINDOW_META_COLUMNS
from .vector_view import VectorView, open_view

READ_BATCH_ROWS = 8192  # rows per Arrow batch when streaming vectors (~50 MB at 1536-d float32)
TAKE_CHUNK = 20_000  # offsets per take request


class Snapshot:
    """Window metadata of ``embeddings_<model>`` at ``version``, with vector access.

    Attributes
    ----------
    window_id, recording_id, channel, start_s, end_s : np.ndarray, shape (n,)
        Columns in offset order.
    """

    def __init__(self, model: str, table, version: int):
        self.model = model
        self.table = table  # a lance.LanceDataset checked out at `version` (read-only)
        self.version = int(version)
        meta = table.to_table(columns=list(WINDOW_META_COLUMNS), with_row_address=True)
        self._row_addr = meta["_rowaddr"].to_numpy()  # (n,) fragment id << 32 | physical row
        self.window_id = meta["window_id"].to_numpy().astype(np.int64)
        self.recording_id = meta["recording_id"].to_numpy().astype(np.int64)
        self.channel = meta["channel"].to_numpy().astype(np.int32)
        self.start_s = meta["start_s"].to_numpy().astype(np.float64)
        self.end_s = meta["end_s"].to_numpy().astype(np.float64)
        ids = self.window_id
        if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):  # ingest appends rising ids
            self._order = np.arange(len(ids))
            self._sorted_ids = ids
        else:
            self._order = np.argsort(ids, kind="stable")
            self._sorted_ids = ids[self._order]
        self.dim = int(table.schema.field("vector").type.list_size)
        self._view: VectorView | None | bool = False  # False: not opened yet

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
            self._view = open_view(self.table, self._row_addr, self.dim)
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
