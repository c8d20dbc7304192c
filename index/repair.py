"""What a rerun repairs in the windows of one model, before it plans any work.

A recording counts as embedded when its ``progress`` row exists *and* the embeddings table
holds exactly the ``n_windows`` that row promises. Anything else (duplicates left by two
writers before the writer lock existed, windows lost with a damaged or deleted table, windows
of a recording that is gone) is undone here so that the run that follows re-embeds it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import PROGRESS_TABLE, embeddings_table_name

DELETE_IDS_PER_COMMIT = 5000  # ids per ``IN (...)`` list: keeps one SQL filter a sane size


def window_counts(db, model: str) -> pd.Series:
    """Windows per recording_id in ``embeddings_<model>`` (empty when the table is missing).

    Reads only the ``recording_id`` column (8 bytes a window).
    """
    if not db.has_table(embeddings_table_name(model)):
        return pd.Series(dtype=np.int64)
    col = db.windows(model).search().select(["recording_id"]).limit(None).to_arrow()
    ids = col["recording_id"].to_numpy()
    rid, n = np.unique(ids, return_counts=True)
    return pd.Series(n, index=rid, dtype=np.int64)


def settle_windows(db, model: str) -> tuple[pd.DataFrame, int]:
    """Drop done-markers whose windows are not all there (exactly once) and stray windows.

    Returns
    -------
    done : the valid rows of :meth:`Database.done_recordings`.
    n_undone : recordings whose done-marker was dropped or whose stray windows were removed
        (the run re-embeds those that are still in the archive).
    """
    done = db.done_recordings(model)
    counts = window_counts(db, model)
    have = counts.reindex(done["recording_id"].to_numpy(), fill_value=0).to_numpy()
    good = have == done["n_windows"].to_numpy()
    bad_done = done.loc[~good, "recording_id"].astype(np.int64).tolist()
    valid = done[good].reset_index(drop=True)
    stray = sorted(set(counts.index.tolist()) - set(valid["recording_id"].tolist()))
    if bad_done:
        _delete_in(db.open_table(PROGRESS_TABLE), bad_done, f"model = '{model}' AND ")
    if stray:
        _delete_in(db.windows(model), stray)
    return valid, len(set(bad_done) | set(stray))


def _delete_in(table, recording_ids: list[int], prefix: str = "") -> None:
    for i in range(0, len(recording_ids), DELETE_IDS_PER_COMMIT):
        part = recording_ids[i : i + DELETE_IDS_PER_COMMIT]
        table.delete(f"{prefix}recording_id IN ({', '.join(map(str, part))})")
