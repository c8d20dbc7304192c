"""``chorus info``: a summary dict of one database."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from .schema import STATUS_FAILED, STATUS_PENDING


def database_info(db) -> dict:
    """Recordings, hours, sites, date range, windows per model, failed files and index state.

    Returns
    -------
    dict with keys path, schema_version, created, updated, audio_roots, n_recordings (readable
    ones), hours, n_pending (readable, not all windows committed yet), n_failed, failed (list of
    {path, error}), sites (sorted list), date_min, date_max (ISO strings or None) and models: {name: {n_windows, n_recordings_done, dim,
    vector_dtype, config, index (one-line description), index_state (dict)}}.
    """
    meta = db.meta
    recs = db.recordings()
    ok = recs[recs["status"] != STATUS_FAILED]
    failed = recs[recs["status"] == STATUS_FAILED]
    starts = pd.to_datetime(ok["start_time"]).dropna()
    info = {
        "path": str(db.path),
        "schema_version": meta.get("schema_version"),
        "created": meta.get("created"),
        "updated": meta.get("updated"),
        "audio_roots": meta.get("audio_roots", []),
        "n_recordings": int(len(ok)),
        "hours": float(ok["duration_s"].fillna(0).sum() / 3600.0),
        "n_pending": int((recs["status"] == STATUS_PENDING).sum()),
        "n_failed": int(len(failed)),
        "failed": [
            {"path": p, "error": e}
            for p, e in zip(failed["abs_path"], failed["error"], strict=True)
        ],
        "sites": sorted(str(s) for s in ok["site"].dropna().unique()),
        "date_min": starts.min().isoformat() if len(starts) else None,
        "date_max": starts.max().isoformat() if len(starts) else None,
        "models": {},
    }
    for model in db.models():
        info["models"][model] = _model_info(db, model, meta.get("models", {}).get(model, {}))
    return info


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
    return text
