"""Is the FAISS index beside a table the one built from it? Checked on every load.

The index is an accelerator: when it is damaged (its files do not match their checksums), when
it belongs to another database, claims a table version this table never reached, or stores
vectors other than the table's, search falls back to exact and says so in one warning line,
and the next ``build_index`` (every ``chorus embed``) rebuilds it.
"""

from __future__ import annotations

import logging

import numpy as np

from .faiss_index import AnnIndex, IndexDamaged

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
    present = np.flatnonzero(snap.contains(ann.ids))
    if not len(present):
        return None
    pos = present[np.linspace(0, len(present) - 1, min(SAMPLE_VECTORS, len(present))).astype(int)]
    stored = ann.reconstruct(pos)  # (m, dim)
    table = snap.vectors_at(snap.offsets(ann.ids[pos]))  # (m, dim)
    if not np.allclose(stored, table, atol=VECTOR_ATOL):
        return "its vectors are not the table's (damaged, or its ids are shuffled)"
    return None
