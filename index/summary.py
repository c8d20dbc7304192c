"""``chorus info``: a summary dict of one database."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from .schema import STATUS_FAILED


def database_info(db) -> dict:
    """Recordings, hours, sites, date range, windows per model, failed files and index state.

    Returns
    -------
    dict with keys path, schema_version, created, updated, audio_roots, recordings, failed,
    failed_files (list of {path, error}, at most 20), hours, sites (sorted list),
    date_range ([first, last] ISO strings or None), models ({name: {windows, recordings_done,
    dim, vector_dtype, index}}).
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
        "recordings": int(len(ok)),
        "failed": int(len(failed)),
        "failed_files": [
            {"path": p, "error": e}
            for p, e in zip(failed["abs_path"][:20], failed["error"][:20], strict=True)
        ],
        "hours": float(ok["duration_s"].fillna(0).sum() / 3600.0),
        "sites": sorted(str(s) for s in ok["site"].dropna().unique()),
        "date_range": (
            [starts.min().isoformat(), starts.max().isoformat()] if len(starts) else None
        ),
        "models": {},
    }
    for model in db.models():
        entry = {"config": meta.get("models", {}).get(model, {})}
        try:
            tbl = db.windows(model)
        except KeyError:
            entry.update(windows=0, recordings_done=0, index={"state": "none"})
            info["models"][model] = entry
            continue
        entry["windows"] = int(tbl.count_rows())
        entry["dim"] = db.model_dim(model)
        vtype = tbl.schema.field("vector").type.value_type
        entry["vector_dtype"] = "float16" if vtype == pa.float16() else "float32"
        entry["recordings_done"] = int(len(db.done_recordings(model)))
        entry["index"] = db.index_state(model)
        info["models"][model] = entry
    return info
