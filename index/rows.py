"""Validation and conversion of user rows (embeddings, recordings) into Arrow tables."""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .schema import (
    MIX_CHANNEL,
    RECORDING_FIELDS,
    RECORDINGS_SCHEMA,
    STATUSES,
    WINDOW_INPUT_COLUMNS,
)

if TYPE_CHECKING:  # imported where a function needs it: a search never does
    import pandas as pd

NORM_EPS = 1e-12  # vectors with a smaller L2 norm cannot be normalised


def loaded_pandas():
    """The pandas module if this process has imported it, else None. A value can only be a
    DataFrame or Series once pandas is loaded, and a search never needs to load it."""
    return sys.modules.get("pandas")


def _columns(rows) -> dict:
    """Return ``{name: column}`` for a pyarrow Table, pandas DataFrame or mapping of arrays."""
    if isinstance(rows, pa.Table):
        return {name: rows.column(name) for name in rows.column_names}
    pd = loaded_pandas()
    if pd is not None and isinstance(rows, pd.DataFrame):
        return {str(name): rows[name] for name in rows.columns}
    if isinstance(rows, Mapping):
        return dict(rows)
    raise TypeError(
        f"rows must be a pyarrow.Table, pandas.DataFrame or dict of columns, got {type(rows).__name__}"
    )


def vectors_to_numpy(col) -> np.ndarray:
    """Turn a vector column (fixed/variable list array, array of arrays, 2-D array) into (n, d) float32."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(col, pa.FixedSizeListArray):
        if col.null_count:
            raise ValueError("vector column contains nulls")
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=np.float32).reshape(len(col), col.type.list_size)  # (n, d)
    if isinstance(col, (pa.ListArray, pa.LargeListArray)):
        col = col.to_pylist()
    pd = loaded_pandas()
    if pd is not None and isinstance(col, pd.Series):
        col = col.to_list()
    if isinstance(col, np.ndarray) and col.ndim == 2:
        return col.astype(np.float32, copy=False)
    items = list(col)
    if not items:
        return np.zeros((0, 0), np.float32)
    lengths = {np.size(v) if v is not None else -1 for v in items}
    if -1 in lengths:
        raise ValueError("vector column contains nulls")
    if len(lengths) != 1:
        raise ValueError(f"vectors have different lengths: {sorted(lengths)}")
    return np.asarray(np.stack([np.asarray(v, np.float32).ravel() for v in items]))  # (n, d)


def utf8(values) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(the UTF-8 bytes of str-or-None ``values`` (n,) one after another, offsets (n + 1,)
    int64 where each starts and the last ends, valid (n,) bool: False for None)."""
    raw = [b"" if x is None else str(x).encode() for x in values]
    offsets = np.zeros(len(raw) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, raw), np.int64, len(raw)), out=offsets[1:])
    return b"".join(raw), offsets, np.fromiter((x is not None for x in values), bool, len(raw))


def arrow_column(values: np.ndarray) -> pa.Array:
    """``pa.array(values)`` of a 1-d numeric or datetime64 array (NaT as null), or
    ``pa.array(values, pa.string())`` of an object array of str and None, built from buffers.

    ``pa.array`` imports pandas (45 MB, 0.2 s) on its first call, whatever it converts; a cold
    search answered through ``to_arrow`` needs nothing of pandas.
    """
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"a column is 1-d, got shape {v.shape}")
    valid = None
    if v.dtype == object:
        data, offsets, valid = utf8(v)
        typ = pa.large_string()  # 64-bit offsets, where 32-bit ones would overflow
        if offsets[-1] < 2**31:
            typ, offsets = pa.string(), offsets.astype(np.int32)
        buffers = [pa.py_buffer(offsets), pa.py_buffer(data)]
    elif v.dtype.kind in "iufM":
        typ = pa.from_numpy_dtype(v.dtype)
        if v.dtype.kind == "M":
            valid = ~np.isnat(v)
        buffers = [pa.py_buffer(np.ascontiguousarray(v))]
    else:
        raise TypeError(f"no Arrow column for {v.dtype}")
    nulls = 0 if valid is None else int(len(v) - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(typ, len(v), [bitmap, *buffers], null_count=nulls)


def normalise(vectors: np.ndarray, allow_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalise rows of (n, d) float32; return (unit vectors, norms (n,)).

    Zero rows raise unless ``allow_zero``, when they stay zero (norm 0): silence can embed
    to an all-zero vector, which then scores 0 against every query.
    """
    v = np.asarray(vectors, np.float32)
    if v.ndim == 1:
        v = v[None, :]  # (1, d)
    if not np.isfinite(v).all():
        bad = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
        raise ValueError(f"vector at row {bad} contains NaN or infinite values")
    norms = np.linalg.norm(v, axis=1)  # (n,)
    zero = norms < NORM_EPS
    if zero.any() and not allow_zero:
        bad = int(np.flatnonzero(zero)[0])
        raise ValueError(f"vector at row {bad} has zero length and cannot be L2-normalised")
    unit = v / np.where(zero, 1.0, norms)[:, None]
    unit[zero] = 0.0
    return unit.astype(np.float32), np.where(zero, 0.0, norms).astype(np.float32)


def _numeric(cols: dict, name: str, dtype, n: int) -> np.ndarray:
    col = cols[name]
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if col.null_count:
            raise ValueError(f"column {name!r} contains nulls")
        col = col.to_numpy(zero_copy_only=False)
    arr = np.asarray(col)
    if arr.shape != (n,):
        raise ValueError(f"column {name!r} has shape {arr.shape}, expected ({n},)")
    if arr.dtype.kind not in "iuf" or (np.dtype(dtype).kind in "iu" and arr.dtype.kind == "f"):
        if not (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0)):
            raise ValueError(f"column {name!r} must be {np.dtype(dtype).name}, got {arr.dtype}")
    return arr.astype(dtype)


def window_rows(rows, dim: int | None) -> dict[str, np.ndarray]:
    """Validate ``add_embeddings`` rows; return columns as NumPy arrays with raw vectors (n, d).

    Raises ValueError naming the offending column/row.
    """
    cols = _columns(rows)
    missing = [c for c in ("recording_id", "start_s", "end_s", "vector") if c not in cols]
    if missing:
        raise ValueError(
            f"embedding rows lack column(s) {missing}; required: recording_id, start_s, end_s, "
            f"vector (channel optional)"
        )
    reserved = sorted({"window_id", "norm"} & set(cols))
    if reserved:
        raise ValueError(
            f"column(s) {reserved} are computed by the database, not given "
            "(window ids are assigned, norms measured)"
        )
    vec = vectors_to_numpy(cols["vector"])
    n = len(vec)
    if n and dim is not None and vec.shape[1] != dim:
        raise ValueError(f"vectors have {vec.shape[1]} dimensions, this model's table stores {dim}")
    out = {
        "recording_id": _numeric(cols, "recording_id", np.int64, n),
        "start_s": _numeric(cols, "start_s", np.float64, n),
        "end_s": _numeric(cols, "end_s", np.float64, n),
        "vector": vec,
    }
    if "channel" in cols:
        out["channel"] = _numeric(cols, "channel", np.int32, n)
    else:
        out["channel"] = np.full(n, MIX_CHANNEL, np.int32)
    bad = ~np.isfinite(out["start_s"]) | ~np.isfinite(out["end_s"]) | (out["start_s"] < 0)
    bad |= out["end_s"] < out["start_s"]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"row {i}: need 0 <= start_s <= end_s (finite), got start_s={out['start_s'][i]}, "
            f"end_s={out['end_s'][i]}"
        )
    if (out["channel"] < MIX_CHANNEL).any():
        raise ValueError("channel must be -1 (mix) or a channel number >= 0")
    names = sorted(set(cols) - set(WINDOW_INPUT_COLUMNS))
    out["extras"] = {name: _extra(cols[name], name, n) for name in names}
    return out


def window_table(cols: dict, ids: np.ndarray, schema: pa.Schema) -> pa.Table:
    """The Arrow rows of an embeddings table: validated ``cols`` (from :func:`window_rows`) with
    their window ``ids``, vectors L2-normalised (norm kept) in the table's vector dtype.

    The one place both writers build rows: the database's ``add_embeddings`` and the fragment
    writers of a distributed run (:mod:`index.shards`), so the two give the same table.
    """
    vtype = schema.field("vector").type
    unit, norms = normalise(cols["vector"], allow_zero=True)  # (n, dim), (n,)
    flat = pa.array(unit.astype(vtype.value_type.to_pandas_dtype()).ravel(), vtype.value_type)
    return pa.table(
        {
            "window_id": np.asarray(ids, np.int64),
            "recording_id": cols["recording_id"],
            "channel": cols["channel"],
            "start_s": cols["start_s"],
            "end_s": cols["end_s"],
            "norm": norms,
            "vector": pa.FixedSizeListArray.from_arrays(flat, vtype.list_size),
            **{k: float_column(v) for k, v in cols["extras"].items()},
        },
        schema=schema,
    )


def _extra(col, name: str, n: int) -> np.ndarray:
    """A per-model extra column (e.g. logits) as float32 (n,) or (n, k)."""
    if not name.isidentifier():
        raise ValueError(f"extra column name {name!r} must be an identifier")
    arr = np.asarray(col.to_pylist() if isinstance(col, (pa.Array, pa.ChunkedArray)) else col)
    if arr.dtype == object:  # a list column
        arr = vectors_to_numpy(list(arr))
    if arr.shape[:1] != (n,) or arr.ndim > 2 or arr.dtype.kind not in "iuf":
        raise ValueError(f"extra column {name!r}: need numbers, one value or one list per row")
    return arr.astype(np.float32)


def float_column(values: np.ndarray) -> pa.Array:
    """float32 (n,) -> a float32 column; (n, k) -> a fixed-size list column of k."""
    v = np.ascontiguousarray(values, np.float32)
    if v.ndim == 1:
        return pa.array(v, pa.float32())
    return pa.FixedSizeListArray.from_arrays(pa.array(v.ravel(), pa.float32()), v.shape[1])


def to_timestamp(value) -> pd.Timestamp | None:
    """Parse a start time (datetime, pandas Timestamp, ISO string, or None) into a naive Timestamp."""
    import pandas as pd

    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot parse start_time {value!r}: {e}") from None
    if ts is pd.NaT:
        return None
    if ts.tzinfo is not None:  # keep the wall-clock time: the recorder's local time matters
        ts = ts.tz_localize(None)
    return ts


def relative_path(audio_root: str, path: str | os.PathLike) -> str:
    """Return ``path`` relative to ``audio_root`` as a "/"-separated string; raise if outside it."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(Path(audio_root))
        except ValueError:
            raise ValueError(f"{path} is not inside the audio root {audio_root}") from None
    if ".." in p.parts:
        raise ValueError(f"recording path {path} must not contain '..'")
    return p.as_posix()


def recording_table(records: list[dict]) -> pa.Table:
    """Build a recordings Arrow table from dicts with (a subset of) RECORDING_FIELDS."""
    data = {name: [] for name in RECORDING_FIELDS}
    for rec in records:
        unknown = set(rec) - set(RECORDING_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown recording field(s) {sorted(unknown)}; known: {RECORDING_FIELDS}"
            )
        status = rec.get("status") or "ok"
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        for name in RECORDING_FIELDS:
            value = rec.get(name)
            if name == "status":
                value = status
            elif name == "start_time":
                ts = to_timestamp(value)
                value = None if ts is None else ts.to_pydatetime()
            elif (
                isinstance(value, float) and np.isnan(value) and name not in ("duration_s", "mtime")
            ):
                value = None
            elif isinstance(value, (np.generic,)):
                value = value.item()
            elif isinstance(value, _dt.datetime) and name == "mtime":
                value = value.timestamp()
            data[name].append(value)
    return pa.table(data, schema=RECORDINGS_SCHEMA)
