"""``chorus info``: a summary dict of one database."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from .schema import STATUS_FAILED, STATUS_PARTIAL, STATUS_PENDING


def database_info(db) -> dict:
    """Recordings, hours, sites, date range, windows per model, failed files and index state.

    Returns
    -------
    dict with keys path, schema_version, created, updated, audio_roots, the counts of
    ``recording_counts``, failed (list of {path, error}), partial (damaged files embedded as far
    as they decode: list of {path, damage}) and models: {name: {n_windows,
    n_recordings_done, dim, vector_dtype, config, index (one-line description), index_state}}.
    """
    meta = db.meta
    recs = db.recordings()
    failed = recs[recs["status"] == STATUS_FAILED]
    partial = recs[recs["status"] == STATUS_PARTIAL]
    info = {
        "path": str(db.path),
        "schema_version": meta.get("schema_version"),
        "created": meta.get("created"),
        "updated": meta.get("updated"),
        "audio_roots": meta.get("audio_roots", []),
        **recording_counts(recs),
        "failed": [
            {"path": p, "error": e}
            for p, e in zip(failed["abs_path"], failed["error"], strict=True)
        ],
        "partial": [
            {"path": p, "damage": e}
            for p, e in zip(partial["abs_path"], partial["error"], strict=True)
        ],
        "models": {},
    }
    for model in db.models():
        info["models"][model] = _model_info(db, model, meta.get("models", {}).get(model, {}))
    return info


def recording_counts(recs: pd.DataFrame) -> dict:
    """The archive's counts, one definition for ``chorus info`` and the Archive page.

    Parameters
    ----------
    recs : the recordings table (``db.recordings()``).

    Returns
    -------
    dict with n_recordings (readable: every status but failed), n_failed, n_pending (readable,
    not all windows committed yet), n_partial (damaged, embedded as far as they decode), hours (of readable ones), sites (sorted, readable ones),
    n_dated (readable ones with a start time) and date_min, date_max (ISO strings over the dated
    ones, or None).
    """
    status = recs["status"] if "status" in recs else pd.Series("", index=recs.index)
    ok = recs[status != STATUS_FAILED]
    start = ok["start_time"] if "start_time" in ok else pd.Series(dtype=object)
    starts = pd.to_datetime(start, errors="coerce").dropna()
    return {
        "n_recordings": int(len(ok)),
        "n_failed": int((status == STATUS_FAILED).sum()),
        "n_pending": int((status == STATUS_PENDING).sum()),
        "n_partial": int((status == STATUS_PARTIAL).sum()),
        "hours": float(ok["duration_s"].fillna(0).sum() / 3600.0) if "duration_s" in ok else 0.0,
        "sites": sorted(str(s) for s in ok["site"].dropna().unique()) if "site" in ok else [],
        "n_dated": int(len(starts)),
        "date_min": starts.min().isoformat() if len(starts) else None,
        "date_max": starts.max().isoformat() if len(starts) else None,
    }


def describe_dates(counts: dict) -> str:
    """When the recordings were made, saying how many carry a date (never a range passed off as
    the archive's when most recordings are undated)."""
    n, dated = counts["n_recordings"], counts["n_dated"]
    if dated == 0:
        return "no recording dated (no start time in file names or metadata)"
    lo, hi = (counts["date_min"].replace("T", " "), counts["date_max"].replace("T", " "))
    span = lo if lo == hi else f"{lo} … {hi}"
    if dated < n:
        return f"{dated} of {n} recordings dated: {span}"
    return f"{span} (all {n} recordings dated)"


def _model_info(db, model: str, config: dict) -> dict:
    entry = {"config": config, "n_windows": 0, "n_recordings_done": 0}
    try:
        tbl = db.windows(model)
    except KeyError:
        entry.update(index="none", index_state={"state": "none"})
        return entry
    vtype = tbl.schema.field("vector").type.value_type
    state = db.index_state(model)
    entry.update(
        n_windows=int(tbl.count_rows()),
        n_recordings_done=int(len(db.done_recordings(model))),
        dim=db.model_dim(model),
        vector_dtype="float16" if vtype == pa.float16() else "float32",
        index=_describe(state),
        index_state=state,
    )
    return entry


def _describe(state: dict) -> str:
    if state["state"] == "damaged":
        return f"damaged: {state['problem']} (exact search; the next `chorus embed` rebuilds it)"
    if state["state"] == "none":
        return "none (exact search; build with db.build_index)"
    text = f"{state['factory']} over {state['n_vectors']} windows, {state['state']}"
    if state["state"] == "stale":
        text += f" (+{state['new_windows']} new, -{state['deleted_windows']} deleted)"
    if state.get("in_place"):
        text += "; vectors read in place from the table"
    return text
