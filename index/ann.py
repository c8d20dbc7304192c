"""The FAISS index beside a table: build or update it, say its state, and check on every load
that it is the one built from that table.

The index is an accelerator: when it is damaged (its files do not match their checksums), when
it belongs to another database, claims a table version this table never reached, or stores
vectors other than the table's, search falls back to exact and says so in one warning line,
and the next ``build_index`` (every ``chorus embed``) rebuilds it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .faiss_index import (
    ADD_BATCH,
    REBUILD_DELETED_FRACTION,
    AnnIndex,
    IndexDamaged,
    IndexSettings,
    check_params,
    choose_tier,
    full_build,
)
from .files import atomic_write
from .tiers import Tier, tier_for_factory

log = logging.getLogger("chorus")

SAMPLE_VECTORS = 16  # index vectors compared with the table's on load
VECTOR_ATOL = 2e-3  # float16 storage rounds unit vectors by up to ~5e-4 per component


def verified_index(db, model: str, mmap: bool = False) -> tuple[AnnIndex | None, str | None]:
    """(index, None) when the saved index checks out, (None, None) when there is none,
    (None, what is wrong) when it is damaged or not this table's. ``mmap``: for searches only
    (see :meth:`AnnIndex.load_checked`)."""
    try:
        ann = AnnIndex.load_checked(db.faiss_dir, model, mmap=mmap)
    except FileNotFoundError:
        return None, None
    except IndexDamaged as err:
        return None, str(err)
    problem = _mismatch(db, model, ann)
    return (None, problem) if problem else (ann, None)


def warn_damaged(model: str, problem: str) -> None:
    """The one line a search prints when it cannot use the index."""
    log.warning(
        "chorus: the %s FAISS index is not usable (%s): searching exactly; "
        "the next `chorus embed` rebuilds it",
        model,
        problem,
    )


def _mismatch(db, model: str, ann: AnnIndex) -> str | None:
    s = ann.settings
    if s.database_id != db.database_id:
        return "it was built for another database"
    snap = db.snapshot(model)
    if s.table_version > snap.version:
        return f"it covers table version {s.table_version}, the table is at {snap.version}"
    if s.dim != snap.dim:
        return f"it holds {s.dim}-d vectors, the table {snap.dim}-d"
    if not ann.exact_storage or not len(ann):
        return None
    pos = _sample_present(snap, ann.ids)
    if not len(pos):
        return None
    stored = ann.reconstruct(pos)  # (m, dim)
    table = snap.vectors_at(snap.offsets(ann.ids[pos]))  # (m, dim)
    if not np.allclose(stored, table, atol=VECTOR_ATOL):
        return "its vectors are not the table's (damaged, or its ids are shuffled)"
    return None


def _sample_present(snap, ids: np.ndarray) -> np.ndarray:
    """Up to ``SAMPLE_VECTORS`` index positions, spread over the index, whose windows are still
    in the table. Candidates are checked first: a membership test of every id costs ~50 ms per
    million on each cold load; all ids are tested only when too few candidates are present."""
    n = len(ids)
    cand = np.unique(np.linspace(0, n - 1, min(4 * SAMPLE_VECTORS, n)).astype(int))
    present = cand[snap.contains(ids[cand])]
    if len(present) < min(SAMPLE_VECTORS, n) // 2:  # mostly deleted windows: look at them all
        present = np.flatnonzero(snap.contains(ids))
    take = np.linspace(0, len(present) - 1, min(SAMPLE_VECTORS, len(present))).astype(int)
    return present[take] if len(present) else present


def _needs_rebuild(old: AnnIndex, tier: Tier, auto: bool, n: int, n_deleted: int) -> bool:
    s = old.settings
    if auto != s.auto or s.dim != old.index.d:
        return True
    if not auto and tier.factory != s.factory:
        return True
    if auto and tier.kind != old.tier.kind:
        return True  # the archive crossed a size threshold
    if old.tier.outgrown(n, s.built_n):
        return True
    return n_deleted > REBUILD_DELETED_FRACTION * max(len(old), 1)


def build_or_update(db, model: str, factory: str = "auto", rebuild: bool = False, **params):
    """Build, update or keep the FAISS index of ``model``; return its IndexSettings.

    Parameters
    ----------
    factory : "auto" (choose by size, see module docstring) or a FAISS factory string
        such as ``"HNSW32"``, ``"IVF1024,SQ8"`` or ``"IVF4096,PQ192x4fs,RFlat"``.
    rebuild : force a full rebuild.
    params : search/build parameters (``efSearch``, ``efConstruction``, ``nprobe``, ``k_factor``)
        and ``float16=False`` to store float32 vectors in the auto choice (default float16).
    """
    snap = db.snapshot(model)
    n = len(snap)
    if n == 0:
        raise ValueError(f"model {model!r} has no windows to index")
    explicit = check_params(params)
    float16 = bool(explicit.pop("float16", True))
    auto = factory == "auto"
    if auto:
        tier, chosen = choose_tier(n, snap.dim, float16, snap.vector_view() is not None)
        params = {**chosen, **explicit}
    else:
        tier = tier_for_factory(factory)
        params = {**tier.default_params(), **explicit}
    old = None
    if not rebuild:  # a damaged index, or another table's, is rebuilt
        old = verified_index(db, model)[0]
    if old is not None:
        present = snap.contains(old.ids)
        if not _needs_rebuild(old, tier, auto, n, int((~present).sum())):
            if auto and "k_factor" in old.settings.params and "k_factor" not in explicit:
                # a grown archive needs a longer re-rank shortlist; never shorten a stored one
                sized = chosen.get("k_factor", 0)
                grown = max(old.settings.params["k_factor"], sized)
                old.settings.params["k_factor"] = grown
            return _update(db, old, snap, explicit)
    ann = full_build(snap, model, tier, params, auto)
    ann.settings.database_id = db.database_id
    ann.save(db.faiss_dir)
    return ann.settings


def _update(db, old: AnnIndex, snap, explicit: dict) -> IndexSettings:
    """Add windows committed since the index was built; keep deleted ones masked at search.

    ``explicit``: search parameters the caller named; stored ones are kept otherwise (defaults
    never overwrite a value a user chose)."""
    t0 = time.perf_counter()
    covered = np.zeros(len(snap), bool)
    covered[snap.offsets(old.ids, missing="drop")] = True
    new_offsets = np.flatnonzero(~covered)
    s = old.settings
    before = dict(s.params)
    s.params = {**s.params, **{k: v for k, v in explicit.items() if k != "efConstruction"}}
    if not len(new_offsets) and s.table_version == snap.version:
        s.action = "unchanged"
        if s.params != before:  # only the settings file changes
            path = old.settings_path(db.faiss_dir, s.model)
            atomic_write(path, lambda p: Path(p).write_text(s.to_json()))
        return s
    new_ids = [old.ids]
    for i in range(0, len(new_offsets), ADD_BATCH):
        part = new_offsets[i : i + ADD_BATCH]
        old.index.add(snap.vectors_at(part))  # (b, dim)
        new_ids.append(snap.window_id[part])
    old.ids = np.concatenate(new_ids)
    s.n_vectors = len(old.ids)
    s.table_version = snap.version
    s.build_s = round(time.perf_counter() - t0, 3)
    s.action = "updated" if len(new_offsets) else "unchanged"
    old.save(db.faiss_dir)
    return s


def index_state(db, model: str) -> dict:
    """{"state": "none"|"current"|"stale"|"damaged", factory, tier, n_vectors, table_version,
    new, deleted} (``problem``: what is wrong with a damaged index)."""
    ann, problem = verified_index(db, model)
    snap = db.snapshot(model)
    if problem:
        return {
            "state": "damaged",
            "problem": problem,
            "windows": len(snap),
            "table_version": snap.version,
        }
    if ann is None:
        return {"state": "none", "windows": len(snap), "table_version": snap.version}
    present = snap.contains(ann.ids)
    n_new = len(snap) - int(present.sum())
    n_deleted = int((~present).sum())
    return {
        "state": "current" if n_new == 0 and n_deleted == 0 else "stale",
        "factory": ann.settings.factory,
        "tier": ann.tier.kind,
        "params": ann.settings.params,
        "n_vectors": len(ann),
        "index_table_version": ann.settings.table_version,
        "table_version": snap.version,
        "new_windows": n_new,
        "deleted_windows": n_deleted,
        # the re-rank and exact scans read the table's mapped pages (the index keeps no copy)
        "in_place": ann.tier.rerank_from_table and snap.vector_view() is not None,
    }
