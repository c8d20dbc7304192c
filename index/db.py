"""The Chorus archive database: one folder with chorus.json, LanceDB tables and FAISS indexes.

Crash safety (one writer, any number of readers):

* Window ids come from a high-water mark kept in ``chorus.json`` and reserved *before* the
  rows are committed, so an id is never handed out twice, even after a crash or a deletion.
* A recording counts as embedded only when ``finish_recording`` has written its ``progress``
  row, which happens after all its windows were committed. ``begin_recording`` deletes any
  windows left by an interrupted run, so a rerun never duplicates windows.
* Each ``add_embeddings`` call is one LanceDB commit: a crash loses at most that call.
* Readers pin a table version (:class:`~index.snapshot.Snapshot`) for the length of a search.

Reads that only need a table's latest rows (snapshots, the recordings frame, versions) open the
Lance dataset directly with ``lance`` (pylance, which LanceDB is built on); ``lancedb`` itself is
imported on the first call that needs a LanceDB table handle (writes, queries through its API).
Importing lancedb costs seconds (its REST namespace client), which a cold ``chorus search`` or a
first explorer page would otherwise pay before reading a single row.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from . import recordings_cache, snapshot_cache
from . import rows as _rows
from .files import atomic_write_json
from .lock import file_lock
from .roots import abs_path
from .schema import (
    CACHE_DIR,
    FAISS_DIR,
    LANCE_DIR,
    META_FILE,
    PROGRESS_SCHEMA,
    PROGRESS_TABLE,
    RECORDING_FIELDS,
    RECORDINGS_SCHEMA,
    RECORDINGS_TABLE,
    SCHEMA_VERSION,
    STATUS_FAILED,
    STATUSES,
    VECTOR_DTYPES,
    check_model_name,
    embeddings_schema,
    embeddings_table_name,
    extra_columns,
)
from .snapshot import Snapshot

if TYPE_CHECKING:  # imported where a method needs it: a search never does
    import pandas as pd


class DatabaseError(RuntimeError):
    """A database that cannot be used as it is (e.g. a damaged chorus.json): one clear line."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def connect(path: str | os.PathLike, create: bool = True) -> Database:
    """Open (or create) the Chorus database folder at ``path``.

    Parameters
    ----------
    path : folder, e.g. ``"survey.chorus"``; created with its sub-folders if missing.
    create : if False, raise FileNotFoundError when no database exists there.
    """
    return Database(path, create=create)


class Database:
    """Handle on one archive database folder. See the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path).expanduser().resolve()
        meta_path = self.path / META_FILE
        if not meta_path.exists():
            if not create:
                raise FileNotFoundError(f"no Chorus database at {self.path} (missing {META_FILE})")
            if self.path.exists() and not self.path.is_dir():
                raise FileExistsError(f"{self.path} exists and is not a folder")
            for sub in (LANCE_DIR, FAISS_DIR, CACHE_DIR):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            now = _now()
            atomic_write_json(
                meta_path,
                {
                    "schema_version": SCHEMA_VERSION,
                    "audio_roots": [],
                    "models": {},
                    "embeddings": {},
                    "next_window_id": {},
                    "database_id": uuid.uuid4().hex,
                    "created": now,
                    "updated": now,
                    "written_at": str(self.path),
                },
            )
        meta = self.meta
        if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {meta['schema_version']}; this Chorus reads "
                f"up to {SCHEMA_VERSION}: upgrade Chorus"
            )
        for sub in (LANCE_DIR, FAISS_DIR, CACHE_DIR):
            (self.path / sub).mkdir(exist_ok=True)
        self._tables: dict = {}  # name -> LanceTable handle
        self._datasets: dict = {}  # name -> (version folder stamp, lance.LanceDataset)
        self._folders: dict[str, str] = {}  # name -> its _versions folder
        self._next_id: dict[str, int] = {}  # per-model in-process id high-water mark
        self._snapshots: dict[str, Snapshot] = {}
        self._recordings_cache: tuple[int, pd.DataFrame] | None = None
        self._lookup: dict | None = None  # recordings_lookup: the columns,
        self._lookup_version: int | None | bool = False  # the version read (False: none),
        self._lookup_stamp = None  # the settled stamp they hold for,
        self._lookup_kept = None  # and the one written to the cache folder

    def __repr__(self) -> str:
        return f"chorus.Database({str(self.path)!r})"

    @functools.cached_property
    def _conn(self):
        """The LanceDB connection, made on first use (see the module docstring)."""
        import lancedb

        # interval 0: every read sees the latest commit of another process (the ingest writer)
        return lancedb.connect(
            str(self.path / LANCE_DIR), read_consistency_interval=_dt.timedelta(0)
        )

    def _table_dir(self, name: str) -> Path:
        return self.path / LANCE_DIR / f"{name}.lance"

    def _versions_dir(self, name: str) -> str:
        """The table's ``_versions`` folder, whose stamp tells a new commit (see dataset); kept,
        as every search asks for it."""
        folder = self._folders.get(name)
        if folder is None:
            folder = self._folders[name] = str(self._table_dir(name) / "_versions")
        return folder

    def dataset(self, name: str):
        """Read-only ``lance.LanceDataset`` of table ``name`` at its latest committed version, or
        None when there is no such table. A returned handle never changes version.

        Kept per name, with the stamp of the table's ``_versions`` folder: every commit adds a
        manifest file there, which moves the folder's change time, so an unchanged stamp means
        no new version. A folder changed less than ``VERSIONS_SETTLE_S`` ago is asked anyway
        (two commits within one coarse clock tick can leave the same time). Asking Lance or
        LanceDB costs a hand-off to their I/O threads: 0.01 ms on an idle machine, 0.5-2 ms on
        a loaded one, on every search.
        """
        return self._dataset_stamped(name)[0]

    def _dataset_stamped(self, name: str) -> tuple:
        """(:meth:`dataset`, the stamp of its ``_versions`` folder read before its version)."""
        folder = self._versions_dir(name)
        stamp = _folder_stamp(folder)  # before the version is read: a later commit changes it
        cached = self._datasets.get(name)
        if stamp is None:
            self._datasets.pop(name, None)
            return None, None
        if cached is not None and cached[0] == stamp and not _recent(stamp):
            return cached[1], stamp
        if cached is None or cached[0][0] != stamp[0]:  # new, or dropped and created again
            import lance

            ds = lance.dataset(str(self._table_dir(name)))
        else:
            ds = cached[1]
            latest = ds.latest_version
            if latest != ds.version:
                ds = ds.checkout_version(latest)
        self._datasets[name] = (stamp, ds)
        return ds, stamp

    # ------------------------------------------------------------------ metadata
    @property
    def meta(self) -> dict:
        """Contents of chorus.json (read fresh each time); :class:`DatabaseError` if damaged."""
        from .check import meta_problem, meta_shape_ok

        try:
            with open(self.path / META_FILE) as f:
                meta = json.load(f)
        except (UnicodeDecodeError, ValueError):
            meta = None
        if not meta_shape_ok(meta):
            raise DatabaseError(f"{self.path}: {meta_problem(self.path)}: restore it from a backup")
        return meta

    def update_meta(self, change: Callable[[dict], None]) -> dict:
        """Apply ``change(meta)`` to chorus.json under a lock and write it atomically; returns it."""
        # locked read-modify-write: two writers must never hand out the same ids
        with file_lock(self.path / (META_FILE + ".lock")):
            meta = self.meta
            change(meta)
            meta["updated"] = _now()
            # where its writers ran: opened elsewhere, it says what it reads (index.roots)
            meta["written_at"] = str(self.path)
            atomic_write_json(self.path / META_FILE, meta)
        return meta

    @property
    def database_id(self) -> str:
        """Random id of this database (kept in chorus.json; given to older ones on first use):
        what its FAISS indexes are tied to."""
        found = self.meta.get("database_id")
        if not found:
            found = self.update_meta(lambda meta: meta.setdefault("database_id", uuid.uuid4().hex))[
                "database_id"
            ]
        return found

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE_DIR

    @property
    def faiss_dir(self) -> Path:
        return self.path / FAISS_DIR

    def register_model(self, name: str, config: dict, vector_dtype: str | None = None) -> None:
        """Record a model's config (incl. weights description) and its vector storage dtype.

        ``vector_dtype`` ("float32" | "float16") applies when the embeddings table is created;
        it cannot change afterwards (ValueError). None keeps the recorded one (else float32).
        """
        check_model_name(name)
        if vector_dtype is not None and vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype must be one of {sorted(VECTOR_DTYPES)}")
        json.dumps(config, default=str)  # fail early on unserialisable configs
        exists = self.has_table(embeddings_table_name(name))
        if exists and vector_dtype is not None:
            vtype = self.embeddings_table(name).schema.field("vector").type.value_type
            stored = {t: k for k, t in VECTOR_DTYPES.items()}.get(vtype, str(vtype))
            if stored != vector_dtype:
                raise ValueError(
                    f"model {name!r} stores {stored} vectors; {vector_dtype} applies only "
                    "to a model not embedded yet"
                )

        def change(meta: dict) -> None:
            meta.setdefault("models", {})[name] = config
            emb = meta.setdefault("embeddings", {})
            if vector_dtype is not None and not exists:
                emb[name] = {"vector_dtype": vector_dtype}
            emb.setdefault(name, {"vector_dtype": "float32"})

        self.update_meta(change)

    def models(self) -> list[str]:
        """Names of models that have a config or an embeddings table."""
        names = set(self.meta.get("models", {}))
        names |= {
            t[len("embeddings_") :] for t in self.table_names() if t.startswith("embeddings_")
        }
        return sorted(names)

    def add_audio_root(self, path: str | os.PathLike) -> str:
        """Record an archive folder; return its absolute resolved path."""
        root = str(Path(path).expanduser().resolve())

        def change(meta: dict) -> None:
            roots = meta.setdefault("audio_roots", [])
            if root not in roots:
                roots.append(root)

        if root not in self.meta.get("audio_roots", []):
            self.update_meta(change)
        return root

    def writer_lock(self, wait_s: float = 0.0, what: str | None = None):
        """The database's exclusive writer lock (:class:`index.lock.WriterLock`), not yet taken:
        ``with db.writer_lock(5): ...`` or ``acquire()`` / ``release()``."""
        from .lock import WriterLock

        return WriterLock(self.path, wait_s=wait_s, what=what)

    # ------------------------------------------------------------------ generic tables
    def table_names(self) -> list[str]:
        """Names of all LanceDB tables in this database."""
        # LanceDB's own listing of a local database is its ``<name>.lance`` folders; read here
        # without importing lancedb
        folder = self.path / LANCE_DIR
        return sorted(
            p.name[: -len(".lance")]
            for p in folder.iterdir()
            if p.name.endswith(".lance") and (p / "_versions").is_dir()
        )

    def has_table(self, name: str) -> bool:
        """Whether LanceDB table ``name`` exists."""
        return self._cached_table(name) is not None

    def forget_table(self, name: str) -> None:
        """Drop the cached handles of table ``name`` (after its files were replaced or removed)."""
        self._tables.pop(name, None)
        self._datasets.pop(name, None)

    def _cached_table(self, name: str):
        """Open table handle, kept per name: with read consistency 0 a handle always reads
        the latest version, and listing tables costs milliseconds per call."""
        tbl = self._tables.get(name)
        if tbl is None and name in self.table_names():
            tbl = self._tables[name] = self._conn.open_table(name)
        return tbl

    def open_table(self, name: str, schema: pa.Schema | None = None):
        """Open LanceDB table ``name``; create it empty with ``schema`` if missing.

        Raises KeyError if the table is missing and no schema is given.
        """
        tbl = self._cached_table(name)
        if tbl is not None:
            return tbl
        if schema is None:
            raise KeyError(f"no table {name!r} in {self.path} (tables: {self.table_names()})")
        try:
            tbl = self._conn.create_table(name, schema=schema)
        except (ValueError, OSError):  # created meanwhile by another handle
            tbl = self._conn.open_table(name)
        self._tables[name] = tbl
        return tbl

    def optimize(self) -> None:
        """Compact small fragments left by many small commits (safe; keeps the latest data)."""
        for name in self.table_names():
            self._conn.open_table(name).optimize()

    # ------------------------------------------------------------------ recordings
    def recordings_table(self):
        """The LanceDB ``recordings`` table (created empty if missing)."""
        return self.open_table(RECORDINGS_TABLE, RECORDINGS_SCHEMA)

    def recordings_frame(self) -> pd.DataFrame:
        """Cached recordings table (with ``abs_path``); do not modify the returned frame."""
        ds = self.dataset(RECORDINGS_TABLE)
        if ds is None:  # a new database: the table is created empty
            self.recordings_table()
            ds = self.dataset(RECORDINGS_TABLE)
        version = ds.version
        if self._recordings_cache is None or self._recordings_cache[0] != version:
            df = ds.to_table().to_pandas()
            df = df.sort_values("recording_id", kind="stable").reset_index(drop=True)
            df["abs_path"] = [
                abs_path(root, p) for root, p in zip(df["audio_root"], df["path"], strict=True)
            ]
            self._recordings_cache = (version, df)
        return self._recordings_cache[1]

    def recordings_lookup(self, keep: bool = False) -> dict:
        """Recording columns a search result carries (recording_id, audio_root, path, site,
        start_time), sorted by recording_id and indexed like arrays (``col[at]``), cached per
        table version. Read straight from the table: no DataFrame, and no joined paths for
        recordings no result names; or, while the table has not changed since, from the copy
        ``keep`` wrote to the cache folder (:mod:`index.recordings_cache`), without Lance."""
        stamp = _folder_stamp(self._versions_dir(RECORDINGS_TABLE))
        if stamp is not None and not _recent(stamp):
            if self._lookup_stamp == stamp:
                return self._kept_lookup(stamp, keep)
            kept = recordings_cache.load(self.cache_dir, stamp)
            if kept is not None:
                self._lookup, self._lookup_stamp, self._lookup_version = kept, stamp, False
                self._lookup_kept = stamp
                return kept
        ds, stamp = self._dataset_stamped(RECORDINGS_TABLE)
        version = None if ds is None else ds.version
        if self._lookup_version != version:
            table = (
                RECORDINGS_SCHEMA.empty_table()
                if ds is None
                else ds.to_table(columns=list(recordings_cache.COLUMNS))
            )
            self._lookup, self._lookup_version = recordings_cache.lookup_of(table), version
        settled = stamp is not None and not _recent(stamp)
        self._lookup_stamp = stamp if settled else None
        return self._kept_lookup(stamp, keep and settled)

    def _kept_lookup(self, stamp, keep: bool) -> dict:
        """The lookup, written to the cache folder first where ``keep`` asks and it is not."""
        if keep and self._lookup_kept != stamp:
            recordings_cache.save(self.cache_dir, stamp, self._lookup)
            self._lookup_kept = stamp
        return self._lookup

    def recordings(self, status: str | None = None) -> pd.DataFrame:
        """All recordings (optionally of one ``status``), sorted by recording_id.

        Columns: the recordings table columns plus ``abs_path`` (audio_root joined with path).
        """
        df = self.recordings_frame().copy()
        if status is not None:
            df = df[df["status"] == status].reset_index(drop=True)
        return df

    def recording(self, recording_id: int) -> dict:
        """One recording as a dict (incl. ``abs_path``); KeyError if unknown."""
        df = self.recordings_frame()
        hit = df[df["recording_id"] == int(recording_id)]
        if hit.empty:
            raise KeyError(f"no recording with id {recording_id}")
        rec = hit.iloc[0].to_dict()
        if _is_missing(rec.get("start_time")):
            rec["start_time"] = None
        return rec

    def recording_id(self, audio_root: str | os.PathLike, path: str | os.PathLike) -> int | None:
        """Id of the recording at (audio_root, path), or None."""
        root = str(Path(audio_root).expanduser().resolve())
        rel = _rows.relative_path(root, path)
        df = self.recordings_frame()
        hit = df[(df["audio_root"] == root) & (df["path"] == rel)]
        return None if hit.empty else int(hit["recording_id"].iloc[0])

    def upsert_recording(
        self, audio_root: str | os.PathLike, path: str | os.PathLike, **fields
    ) -> int:
        """Insert or update the recording keyed by (audio_root, path); return its recording_id.

        ``fields``: duration_s, sample_rate, channels, site, start_time, size, mtime, status
        ("ok" | "pending" | "failed"), error. Fields not given keep their stored value.
        """
        return int(self.upsert_recordings([dict(fields, audio_root=audio_root, path=path)])[0])

    def upsert_recordings(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        """Bulk :meth:`upsert_recording` in one commit; return recording ids (n,) int64."""
        pd = _rows.loaded_pandas()
        if pd is not None and isinstance(records, pd.DataFrame):
            records = records.to_dict("records")
        df = self.recordings_frame()
        key_to_id = {
            (r, p): int(i)
            for r, p, i in zip(df["audio_root"], df["path"], df["recording_id"], strict=True)
        }
        merged, ids, seen, n_new = [], [], {}, 0
        for rec in records:
            if "audio_root" not in rec or "path" not in rec:
                raise ValueError("each recording needs 'audio_root' and 'path'")
            root = self.add_audio_root(rec["audio_root"])
            rel = _rows.relative_path(root, rec["path"])
            key = (root, rel)
            if key in seen:  # the same file twice in one call: last one wins
                merged[seen[key]].update(
                    {k: v for k, v in rec.items() if k not in ("audio_root", "path")}
                )
                ids.append(merged[seen[key]]["recording_id"])
                continue
            if key in key_to_id:
                rid = key_to_id[key]
                base = df[df["recording_id"] == rid].iloc[0].drop("abs_path").to_dict()
                base = {k: (None if _is_missing(v) else v) for k, v in base.items()}
            else:  # a placeholder until the new ids are reserved below
                rid, n_new = -1 - n_new, n_new + 1
                base = {}
            row = dict(base)
            row.update({k: v for k, v in rec.items() if k in RECORDING_FIELDS})
            row.update(recording_id=rid, audio_root=root, path=rel)
            extra = set(rec) - set(RECORDING_FIELDS)
            if extra:
                raise ValueError(
                    f"unknown recording field(s) {sorted(extra)}; known: {RECORDING_FIELDS}"
                )
            seen[key] = len(merged)
            merged.append(row)
            ids.append(rid)
        if n_new:  # fresh ids, never those of deleted recordings (labels may still name them)
            floor = int(df["recording_id"].max()) + 1 if len(df) else 0
            first = self.reserve_ids("next_recording_id", "all", floor, n_new)
            for row in merged:
                if row["recording_id"] < 0:
                    row["recording_id"] = first - 1 - row["recording_id"]
            ids = [first - 1 - i if i < 0 else i for i in ids]
        if merged:
            table = _rows.recording_table(merged)
            (
                self.recordings_table()
                .merge_insert("recording_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table)
            )
        return np.asarray(ids, np.int64)

    def set_status(self, recording_ids, status: str) -> None:
        """Set the status of recordings (one commit), e.g. "ok" once all their windows are in."""
        ids = [int(i) for i in recording_ids]
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if ids:
            where = f"recording_id IN ({', '.join(map(str, ids))})"
            self.recordings_table().update(where=where, values={"status": status})

    def mark_failed(
        self, audio_root: str | os.PathLike, path: str | os.PathLike, error: str
    ) -> int:
        """Record that a file could not be read (status "failed" + error); return its id."""
        return self.upsert_recording(audio_root, path, status=STATUS_FAILED, error=str(error))

    def delete_recording(self, recording_id: int) -> None:
        """Remove a recording and all that points at it: its windows in every model, its progress
        rows, and its labels and detections (intervals of a file that is no longer here)."""
        from .classify import DETECTIONS_TABLE
        from .labels import LABELS_TABLE

        rid = int(recording_id)
        for model in self.models():
            self.delete_windows(model, rid)
        for name in (PROGRESS_TABLE, LABELS_TABLE, DETECTIONS_TABLE):
            if self.has_table(name):
                self.open_table(name).delete(f"recording_id = {rid}")
        self.recordings_table().delete(f"recording_id = {rid}")

    # ------------------------------------------------------------------ embeddings
    def embeddings_table(self, model: str, dim: int | None = None, extras: dict | None = None):
        """Open ``embeddings_<model>``; create it (with ``extras`` columns: name -> width) if
        ``dim`` is given, else KeyError if missing."""
        name = embeddings_table_name(model)
        tbl = self._cached_table(name)
        if tbl is not None:
            return tbl
        if dim is None:
            raise KeyError(
                f"no embeddings for model {model!r} in {self.path} (models: {self.models()})"
            )
        dtype = self.meta.get("embeddings", {}).get(model, {}).get("vector_dtype", "float32")
        if model not in self.meta.get("models", {}):
            self.register_model(model, {"dim": int(dim)}, vector_dtype=dtype)
        return self.open_table(name, embeddings_schema(dim, dtype, extras))

    def model_dim(self, model: str) -> int:
        """Vector dimension stored for ``model``."""
        return int(self.embeddings_table(model).schema.field("vector").type.list_size)

    def n_windows(self, model: str) -> int:
        """Windows of ``model`` committed now (0 when it has none); reads no LanceDB table."""
        ds = self.dataset(embeddings_table_name(model))
        return 0 if ds is None else int(ds.count_rows())

    def windows(self, model: str):
        """The LanceDB table ``embeddings_<model>`` (latest version) for direct queries."""
        return self.embeddings_table(model)

    def reserve_window_ids(self, model: str, n: int) -> np.ndarray:
        """Reserve ``n`` fresh window ids, persisting the high-water mark before any commit."""
        if model not in self._next_id:
            col = self.embeddings_table(model).search().select(["window_id"]).limit(None).to_arrow()
            ids = col["window_id"].to_numpy()
            self._next_id[model] = int(ids.max()) + 1 if len(ids) else 0
        start = self.reserve_ids("next_window_id", model, self._next_id[model], n)
        self._next_id[model] = start + n
        return np.arange(start, start + n, dtype=np.int64)

    def reserve_ids(self, counter: str, key: str, floor: int, n: int) -> int:
        """First of ``n`` ids above ``floor`` and the stored high-water mark ``meta[counter][key]``,
        which is raised before the caller commits anything (ids are never handed out twice)."""
        first = []

        def change(meta: dict) -> None:
            marks = meta.setdefault(counter, {})
            first.append(max(int(floor), int(marks.get(key, 0))))
            marks[key] = first[0] + n

        self.update_meta(change)
        return first[0]

    def add_embeddings(self, model: str, rows) -> np.ndarray:
        """Append windows to ``embeddings_<model>`` in one commit; return their window ids (n,).

        Parameters
        ----------
        rows : pyarrow.Table, pandas.DataFrame or dict with columns ``recording_id`` (int),
            ``start_s``, ``end_s`` (float seconds), ``vector`` ((n, dim) array, list column or
            fixed-size list) and optional ``channel`` (int, -1 = mix, default). Any further
            column is a per-model extra (e.g. ``logits``: (n, C) or (n,) numbers), stored as
            float32; the first write of a model fixes which extras it has.

        Vectors are L2-normalised before storage (their norm is kept in column ``norm``);
        all-zero vectors (e.g. digital silence) are stored as zeros with norm 0.
        The first call creates the table with the vectors' dimension; later calls must match.
        """
        check_model_name(model)
        name = embeddings_table_name(model)
        dim = self.model_dim(model) if self.has_table(name) else None
        cols = _rows.window_rows(rows, dim)
        n = len(cols["vector"])
        if n == 0:
            return np.empty(0, np.int64)
        extras = cols["extras"]
        widths = {k: (v.shape[1] if v.ndim == 2 else 0) for k, v in extras.items()}
        tbl = self.embeddings_table(model, dim=cols["vector"].shape[1], extras=widths)
        if extra_columns(tbl.schema) != widths:  # fixed by the first write of the model
            raise ValueError(
                f"model {model!r} stores extra columns {extra_columns(tbl.schema)} "
                f"(name: width), these rows give {widths}"
            )
        ids = self.reserve_window_ids(model, n)
        table = _rows.window_table(cols, ids, tbl.schema)
        tbl.add(table)
        return ids

    def progress_table(self):
        """The LanceDB ``progress`` table of done-markers (created empty if missing)."""
        return self.open_table(PROGRESS_TABLE, PROGRESS_SCHEMA)

    def begin_recording(self, model: str, recording_id: int) -> None:
        """Start (re-)embedding a recording: drop its done-marker and any windows already stored."""
        rid = int(recording_id)
        check_model_name(model)
        self.progress_table().delete(f"recording_id = {rid} AND model = '{model}'")
        if self.has_table(embeddings_table_name(model)):
            self.delete_windows(model, rid)

    def finish_recording(self, model: str, recording_id: int, n_windows: int) -> None:
        """Mark a recording fully embedded, after checking that ``n_windows`` windows are committed."""
        self.finish_recordings(model, [(recording_id, n_windows)])

    def finish_recordings(self, model: str, done: list[tuple[int, int]]) -> None:
        """:meth:`finish_recording` for many ``(recording_id, n_windows)`` in one count query and
        one commit: per-file commits would leave a data file per recording in ``progress``."""
        from .progress import mark_done

        mark_done(self, model, done)

    def done_recordings(self, model: str) -> pd.DataFrame:
        """Recordings fully embedded with ``model``: recording_id, size, mtime, n_windows, done_at."""
        check_model_name(model)
        df = (
            self.progress_table()
            .search()
            .where(f"model = '{model}'")
            .limit(None)
            .to_arrow()
            .to_pandas()
        )
        return df.drop(columns=["model"]).sort_values("recording_id").reset_index(drop=True)

    def delete_windows(self, model: str, recording_id: int) -> None:
        """Delete all windows of one recording for ``model`` (one commit)."""
        if self.has_table(embeddings_table_name(model)):
            self.embeddings_table(model).delete(f"recording_id = {int(recording_id)}")

    def snapshot(self, model: str) -> Snapshot:
        """A consistent view of ``embeddings_<model>`` at its latest version (cached per version).

        Where the table has not changed since a process recorded its snapshot cache file
        (:mod:`index.snapshot_cache`), the snapshot is opened from that file without Lance."""
        name = embeddings_table_name(model)
        snap = self._settled_snapshot(model, name)
        if snap is not None:
            return snap
        ds, stamp = self._dataset_stamped(name)
        if ds is None:
            raise KeyError(
                f"no embeddings for model {model!r} in {self.path} (models: {self.models()})"
            )
        snap = self._snapshots.get(model)
        if snap is None or snap.version != ds.version:
            # a dataset handle never changes version
            snap = Snapshot(model, ds, ds.version, cache=self.cache_dir)
            self._snapshots[model] = snap
        if not _recent(stamp) and snap.stamp != stamp:
            snap.stamp = stamp  # read before the version: while it holds, this is the latest
            # recorded once its vector layout checked out against take (vector_view)
            if snap.kept_file is not None and snap.vector_view() is not None:
                snapshot_cache.remember(
                    self.cache_dir, model, stamp, snap.version, snap.dim, snap.kept_file
                )
        return snap

    def _settled_snapshot(self, model: str, name: str) -> Snapshot | None:
        """The snapshot of a table whose ``_versions`` folder has not changed since it was
        opened here or recorded in the cache, or None."""
        stamp = _folder_stamp(self._versions_dir(name))
        if stamp is None or _recent(stamp):
            return None
        snap = self._snapshots.get(model)
        if snap is not None and snap.stamp == stamp:
            return snap
        current = snapshot_cache.current(self.cache_dir, model, stamp)
        if current is None:
            return None
        root = str(self._table_dir(name))  # not the recorded one: the folder may have moved
        # by its folder, not self: a cycle through self._snapshots could be collected in
        # LanceDB's event-loop thread and deadlock there (see SearchState.__init__)
        snap = Snapshot.from_file(model, current, root, functools.partial(_dataset_at, root))
        snap.stamp = stamp
        self._snapshots[model] = snap
        return snap

    def vectors(self, model: str, window_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of ``model``: (window_ids (n,) int64, vectors (n, dim) float32).

        ``window_ids=None`` returns all windows (ordered by window_id); otherwise in the given
        order, raising KeyError for unknown ids.
        """
        snap = self.snapshot(model)
        if window_ids is None:
            offsets = np.argsort(snap.window_id, kind="stable")
        else:
            offsets = snap.offsets(window_ids)
        return snap.window_id[offsets], snap.vectors_at(offsets)

    # ------------------------------------------------------------------ index + search
    def build_index(self, model: str, factory: str = "auto", rebuild: bool = False, **params):
        """Build or update the FAISS index of ``model``; return its :class:`IndexSettings`.

        See :func:`index.ann.build_or_update` for the rules and thresholds.
        """
        from .ann import build_or_update

        settings = build_or_update(self, model, factory=factory, rebuild=rebuild, **params)
        self.search_state.forget(model)
        return settings

    def data_versions(self, model: str) -> tuple[int, int]:
        """Versions of ``model``'s windows table and of the recordings table: what every result
        derived from windows with their recording columns (site, time) is keyed by."""
        windows = self.dataset(embeddings_table_name(model))
        if windows is None:
            self.windows(model)  # KeyError naming the models there are
        self.recordings_frame()  # creates the recordings table of a new database
        return int(windows.version), int(self.dataset(RECORDINGS_TABLE).version)

    def drop_index(self, model: str) -> None:
        """Remove the FAISS index files of ``model`` (search is then exact until the next build)."""
        from .faiss_index import remove_index

        remove_index(self.faiss_dir, model)
        self.search_state.forget(model)

    def index_state(self, model: str) -> dict:
        """State of the FAISS index: factory, covered version, new/deleted windows since."""
        from .ann import index_state

        return index_state(self, model)

    def search(self, model: str, query):
        """Start a similarity search; see :class:`index.search.SearchBuilder`."""
        from .search import SearchBuilder

        return SearchBuilder(self, model, query)

    @functools.cached_property
    def search_state(self):
        """What searches of this database keep between calls (:class:`index.search.SearchState`)."""
        from .search import SearchState

        return SearchState(self)

    # ------------------------------------------------------------------ summary
    def info(self) -> dict:
        """Summary for ``chorus info``: recordings, hours, sites, dates, windows, failures, indexes."""
        from .summary import database_info

        return database_info(self)


VERSIONS_SETTLE_S = 2.0  # a version folder changed this recently is always asked (see dataset)


def _dataset_at(folder: str, version: int):
    """Read-only ``lance.LanceDataset`` of the table in ``folder`` at ``version``."""
    import lance

    return lance.dataset(folder, version=version)


def _folder_stamp(folder: Path) -> tuple[int, int] | None:
    """(inode, change time ns) of a folder, None if it does not exist."""
    try:
        st = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_mtime_ns


def _recent(stamp: tuple[int, int]) -> bool:
    return time.time_ns() - stamp[1] < VERSIONS_SETTLE_S * 1e9


def _is_missing(value) -> bool:
    import pandas as pd

    if value is None or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
