"""Arrow schemas, table names and constants of the Chorus archive database.

The database is one folder::

    survey.chorus/
      chorus.json          metadata (see ``META_KEYS``), written atomically
      lance/               LanceDB tables: ``recordings``, ``progress``, ``embeddings_<model>``, ...
      faiss/               ``<model>.json`` (IndexSettings) names the current generation
                           ``<model>.<token>.index`` + ``.ids.npy`` (window_id of each position);
                           ``<model>.index`` / ``<model>.ids.npy`` are hard links to it
      cache/               projections, clusters (owned by other modules)
"""

from __future__ import annotations

import re

import pyarrow as pa

SCHEMA_VERSION = 1  # bump when a table layout changes incompatibly
META_FILE = "chorus.json"
LANCE_DIR = "lance"
FAISS_DIR = "faiss"
CACHE_DIR = "cache"

RECORDINGS_TABLE = "recordings"
PROGRESS_TABLE = "progress"
EMBEDDINGS_PREFIX = "embeddings_"

STATUS_OK = "ok"  # readable, and all its windows committed by the last ingest that took it
STATUS_PENDING = "pending"  # readable, being embedded (or an ingest stopped before its end)
STATUS_FAILED = "failed"  # unreadable: ``error`` says why
# damaged (cut short, frames lost): what decodes is embedded and committed, ``error`` says where
# the damage is and ``duration_s`` is the length that decodes
STATUS_PARTIAL = "partial"
STATUSES = (STATUS_OK, STATUS_PENDING, STATUS_FAILED, STATUS_PARTIAL)

MIX_CHANNEL = -1  # channel number of a down-mixed window
VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}

# Model names become table and file names, so keep them to a safe alphabet.
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

RECORDINGS_SCHEMA = pa.schema(
    [
        pa.field("recording_id", pa.int64(), nullable=False),
        pa.field("audio_root", pa.string(), nullable=False),  # absolute path of the archive root
        pa.field("path", pa.string(), nullable=False),  # relative to audio_root, "/" separated
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("site", pa.string()),
        pa.field("start_time", pa.timestamp("us")),  # local wall-clock time of the recorder
        pa.field("size", pa.int64()),  # bytes
        pa.field("mtime", pa.float64()),  # seconds since the epoch
        pa.field("status", pa.string()),  # "ok" | "pending" | "failed" | "partial"
        pa.field("error", pa.string()),
    ]
)
RECORDING_FIELDS = tuple(RECORDINGS_SCHEMA.names)

# One row per (recording, model) whose windows are all committed: the "embedded" marker.
PROGRESS_SCHEMA = pa.schema(
    [
        pa.field("recording_id", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("n_windows", pa.int64()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.float64()),
        pa.field("done_at", pa.timestamp("us")),
    ]
)

# Columns a caller may give to ``add_embeddings``; window_id and norm are ours.
WINDOW_INPUT_COLUMNS = ("recording_id", "channel", "start_s", "end_s", "vector")
WINDOW_META_COLUMNS = ("window_id", "recording_id", "channel", "start_s", "end_s")


def check_model_name(name: str) -> str:
    """Return ``name`` if it is usable as a table/file name, else raise ValueError."""
    if not isinstance(name, str) or not _MODEL_NAME_RE.match(name):
        raise ValueError(
            f"bad model name {name!r}: use letters, digits, '_', '-', '.' (max 64 characters)"
        )
    return name


def embeddings_table_name(model: str) -> str:
    return EMBEDDINGS_PREFIX + check_model_name(model)


def embeddings_schema(
    dim: int, vector_dtype: str = "float32", extras: dict[str, int] | None = None
) -> pa.Schema:
    """Schema of ``embeddings_<model>``: one row per window, vector L2-normalised.

    ``norm`` keeps the raw vector's L2 norm so that raw dot products stay available
    (raw = vector * norm). ``extras`` adds per-model float32 columns (e.g. logits), by name:
    width 0 for one number per window, k for a fixed-size list of k.
    """
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(
            f"vector_dtype must be one of {sorted(VECTOR_DTYPES)}, got {vector_dtype!r}"
        )
    if int(dim) <= 0:
        raise ValueError(f"vector dimension must be positive, got {dim}")
    return pa.schema(
        [
            pa.field("window_id", pa.int64(), nullable=False),
            pa.field("recording_id", pa.int64(), nullable=False),
            pa.field("channel", pa.int32(), nullable=False),  # -1 = mix, else 0..C-1
            pa.field("start_s", pa.float64(), nullable=False),  # seconds from file start
            pa.field("end_s", pa.float64(), nullable=False),
            pa.field("norm", pa.float32()),
            pa.field("vector", pa.list_(VECTOR_DTYPES[vector_dtype], int(dim))),
            *(
                pa.field(name, pa.float32() if not k else pa.list_(pa.float32(), int(k)))
                for name, k in (extras or {}).items()
            ),
        ]
    )


def extra_columns(schema: pa.Schema) -> dict[str, int]:
    """The per-model extra columns of an embeddings table: name -> width (0 = scalar)."""
    base = set(embeddings_schema(1).names)
    return {
        f.name: (f.type.list_size if pa.types.is_fixed_size_list(f.type) else 0)
        for f in schema
        if f.name not in base
    }
