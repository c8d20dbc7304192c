"""Archive → database: discover recordings, embed their windows, commit in chunks, resume after a crash.

Rules that make a multi-day run safe (see DESIGN.md):

- A recording counts as embedded for a model only after *all* its windows are committed
  (``db.finish_recording``); until then a rerun treats it as not done and ``db.begin_recording`` first
  removes whatever partial windows an interrupted run left, so no window is ever duplicated.
- Windows are committed every ``chunk_windows`` windows, so a crash loses at most one chunk of work.
- A file that cannot be decoded is recorded with status ``failed`` and its error, and the run goes on.
  It is retried only with ``retry_failed=True`` or when the file changed (size or mtime).
- A damaged file (cut short, frames lost mid-file) has what decodes embedded and is recorded with
  status ``partial``, the damage's position in ``error`` and the length that decodes: it is done,
  and a rerun leaves it as it is until the file changes.
- A file whose size or mtime changed since it was embedded is embedded again and its old windows removed.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explorer.links import list_archive
from explorer.plan import add_link_targets, expected_windows, plan_run
from explorer.recordings import check_site_rule
from index.compaction import compact_if_due
from index.schema import embeddings_table_name

CHUNK_WINDOWS = 2000  # windows per LanceDB commit: a crash loses at most this much work
DEFAULT_BATCH = 32  # windows per model call on a CPU
MAX_AUTO_WORKERS = 16  # decode processes chosen for a GPU run when --workers is not given
DEFAULT_GPU_BATCH = 256  # on CUDA: ~97 % of the best model-only rate on an H200 (batch 512)
# vectors of a new model: float16 rounds a unit vector's components by <= 2**-11 relative and
# scores by ~1e-5 (recall@10 unchanged), and halves the table on disk and every exact read
DEFAULT_STORE = "float16"
LOCK_WAIT_S = 5.0  # s a second writer waits for the first before it gives up


class IngestError(ValueError):
    """Bad usage of the ingest (missing folder, empty archive, untrained weights…): one clear line."""


@dataclass
class IngestSummary:
    """What one ``embed_archive`` run did."""

    db_path: Path
    model: str
    n_found: int = 0
    n_embedded: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    n_partial: int = 0  # damaged files embedded as far as they decode (counted in n_embedded)
    n_windows: int = 0
    hours: float = 0.0
    seconds: float = 0.0
    failed: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)  # (path, where the damage is)
    index: str = "none"  # the FAISS factory kept beside the table
    stages: object = None  # a --ray run's explorer.distributed.StageTimes (per-stage seconds)

    def line(self) -> str:
        """The one-line summary printed at the end of ``chorus embed``."""
        rate = self.n_windows / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.model}: embedded {self.n_embedded} recordings ({self.hours:.2f} h, "
            f"{self.n_windows} windows, {rate:.0f} windows/s) in {self.seconds:.1f} s; "
            f"{self.n_skipped} already done; {self.n_failed} failed; index {self.index}"
        )
        if self.n_partial:
            text += f"; {self.n_partial} damaged, embedded as far as they decode"
        if self.n_failed or self.n_partial:
            text += f" (see `chorus info --db {self.db_path}`)"
        return text


@functools.lru_cache(maxsize=4)
def cached_model(name: str, weights: str | None, device: str = "auto"):
    """Load a model once per process (search queries and the app reuse it)."""
    import embedder

    return embedder.load_model(name, weights=weights, device=device)


def _check_weights(model: str, path: str | None, sha256: str | None) -> None:
    """The weights file a database was made with must still be the same file: other weights
    would embed queries in another space and search would return nonsense, quietly."""
    if path is None or sha256 is None:
        return
    p = Path(path)
    if not p.exists():
        raise IngestError(f"the {model} weights this database was made with are gone: {p}")
    st = p.stat()
    if _weights_sha256(str(p), st.st_size, st.st_mtime_ns) != sha256:
        raise IngestError(
            f"{p} is not the file the {model!r} embeddings were made with (its SHA-256 differs): "
            "restore it, or embed the archive again into a new --db"
        )


@functools.lru_cache(maxsize=8)
def _weights_sha256(path: str, size: int, mtime_ns: int) -> str:
    # keyed by size and mtime: a multi-GB checkpoint is hashed once per process, not per query
    from embedder.weights import sha256_file

    return sha256_file(path)


def model_settings(
    model, hop_s: float, channels: str, weights: str | None, store_logits: bool = False
) -> dict:
    """The settings stored with the database: everything needed to embed a query the same way."""
    settings = model.config_dict()
    if store_logits:  # the classes of the stored ``logits`` column, in order (None: unnamed)
        names = getattr(model, "class_names", None)
        settings["logits"] = {"n": model.n_logits, "classes": list(names) if names else None}
    settings.update(hop_s=float(hop_s), channels=channels, weights_path=None, weights_sha256=None)
    if weights is not None:
        from embedder.weights import sha256_file

        settings["weights_path"] = str(Path(weights).resolve())
        settings["weights_sha256"] = sha256_file(weights)
    settings["trained"] = bool(model.trained)
    return settings


def model_key(db, model: str, settings: dict) -> str:
    """The database's name for this run's windows, after checking they can go there.

    A model's windows are stored under its own name; a run of the same model with another hop
    (and every other setting the same) goes beside them under ``<model>-hop<h>`` (e.g.
    ``spectral-hop2.5``): labels are time spans, so they apply to both. Any other difference is
    one IngestError line.
    """
    stored = db.meta.get("models", {})
    base = stored.get(model)
    if base is None or base.get("hop_s") == settings.get("hop_s"):
        _check_same_settings(db, model, settings)
        return model
    _check_same_settings(db, model, {**settings, "hop_s": base.get("hop_s")})
    key = f"{model}-hop{float(settings['hop_s']):g}"
    _check_same_settings(db, key, settings)
    return key


def _check_same_settings(db, name: str, settings: dict) -> None:
    old = db.meta.get("models", {}).get(name)
    if not old:
        return
    for key in ("window_s", "hop_s", "sample_rate", "dim", "weights_sha256", "channels", "logits"):
        if key == "logits" and bool(old.get(key)) != bool(settings.get(key)):
            flag = "with" if old.get(key) else "without"
            raise IngestError(
                f"the database's {name!r} windows were stored {flag} --store-logits: "
                "run again the same way (or use another --db)"
            )
        if old.get(key) != settings.get(key):
            raise IngestError(
                f"the database already holds {name!r} embeddings made with {key}={old.get(key)!r}; "
                f"this run asks for {key}={settings.get(key)!r}: use another --db"
            )


def embed_archive(
    archive_dir: str | Path,
    db_path: str | Path,
    model: str = "spectral",
    weights: str | None = None,
    hop_s: float | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    channels: str = "mix",
    allow_untrained: bool = False,
    site: str | None = None,
    retry_failed: bool = False,
    chunk_windows: int = CHUNK_WINDOWS,
    index_factory: str = "auto",
    rebuild_index: bool = False,
    progress: bool = True,
    model_options: dict | None = None,
    store_logits: bool = False,
    lock_wait_s: float = LOCK_WAIT_S,
    ray_address: str | None = None,
    ray_options: dict | None = None,
    follow_links: bool = False,
    vector_dtype: str | None = None,
) -> IngestSummary:
    """Embed every recording under ``archive_dir`` into the database at ``db_path``.

    Parameters
    ----------
    archive_dir : path
        Folder searched recursively for audio (by extension, and by content for unknown extensions).
        It is registered as an audio root: recordings are stored relative to it.
    db_path : path
        Database folder; created if missing.
    model, weights, device : str
        Passed to :func:`embedder.load_model`. Random weights (``weights=None`` for a neural model)
        are refused unless ``allow_untrained``.
    hop_s : float, optional
        Hop between windows (s); default: the model's window length (no overlap).
    batch_size : int, optional
        Windows per model call; default 32 on a CPU, 256 on CUDA.
    workers : int, optional
        Decoding processes (0 decodes in this process). Each packs whole batches, handed over
        through shared memory (and page-locked for CUDA). Default: 0 on a CPU, where the model is
        the bottleneck; on CUDA, where decoding is, one per core but one, up to 16.
    channels : {"mix", "first", "all"}
        Multi-channel policy.
    site : str, optional
        How to read a recording's site from its path: ``"dir:N"`` (path component N of the relative
        path, default ``dir:0`` for nested archives), or a regex with a named group ``site``.
    retry_failed : bool
        Try again files that failed before even if they did not change.
    chunk_windows : int
        Windows per database commit.
    index_factory, rebuild_index : str, bool
        FAISS index to keep beside the table (``"auto"`` picks by size, see ``index.faiss_index``),
        and whether to rebuild it from scratch rather than update it.
    progress : bool
        Show a progress bar.
    model_options : dict, optional
        Extra options for the model's loader, e.g. ``{"precision": "fp16", "compile": True}`` or
        ``{"backend": "onnxruntime"}`` (perch); a bad one is an IngestError before any work.
    store_logits : bool
        Also store the weights' classification-head logits of every window (column ``logits``,
        (C,) per window, from the same forward pass); needs weights that carry a head.
    lock_wait_s : float
        Seconds to wait for another run writing the same database (one writer at a time);
        then :class:`IngestError` names that run.
    ray_address : str, optional
        Run the decode and the model on a Ray cluster (:mod:`explorer.distributed`): ``"auto"``
        joins the running cluster or starts a local one, anything else is a cluster address.
        The result is the database this function writes without it; needs ``chorus[distributed]``.
    ray_options : dict, optional
        Settings of the Ray run (see :func:`explorer.distributed.embed_files_ray`), e.g.
        ``{"shard_windows": 512, "commit_shards": 8}``.
    follow_links : bool
        Read what links under ``archive_dir`` point at outside it (recorded in ``chorus.json`` as
        ``link_targets``, which the explorer may then read too). Without it such links, dangling
        links and link loops are recorded as failed with their reason and never opened
        (:mod:`explorer.links`).
    vector_dtype : "float32" | "float16", optional
        How the vectors are stored (``--store``); fixed by the model's first embed, None keeps
        what is stored (``DEFAULT_STORE``, float16, for a new model).

    Returns
    -------
    IngestSummary
    """
    import index
    from embedder.batching import WindowSpec

    t0 = time.perf_counter()
    root = Path(archive_dir)
    _check_request(root, Path(db_path), channels, hop_s, site)
    files, listing = _archive_files(root, follow_links)
    if ray_address is not None:
        from explorer.distributed import check_ray

        check_ray()  # installed? one line before anything is loaded
    # on Ray the driver's model only describes the settings: the actors load their own, on their
    # GPU, so the driver (perhaps a head node without one) keeps its copy on the CPU
    local_device = "cpu" if ray_address is not None else device
    m = _load_model(model, weights, local_device, model_options)
    on_cuda = getattr(getattr(m, "device", None), "type", None) == "cuda"
    batch_given = batch_size
    batch_size, workers = _batching(m, on_cuda, batch_size, workers)
    _check_model(m, model, allow_untrained, store_logits)
    hop = _hop(m, hop_s)
    settings = model_settings(m, hop, channels, weights, store_logits)
    _check_factory(index_factory, m.dim)
    run = dict(
        site=site,
        retry_failed=retry_failed,
        chunk_windows=chunk_windows,
        progress=progress,
        batch_size=batch_size,
        workers=workers,
        on_cuda=on_cuda,
        store_logits=store_logits,
        refused={p: why for p, why in listing.refused},
    )
    if ray_address is not None:  # what the actors need to load the same model
        loader = dict(model=model, weights=weights, device=device, options=model_options or {})
        run.update(ray_address=ray_address, ray_options=dict(ray_options or {}))
        run.update(loader=loader, batch_size=batch_given)
    db = index.connect(db_path)
    with _writer(db, lock_wait_s):
        key = _register(db, model, settings, vector_dtype, root, listing)
        summary = IngestSummary(Path(db_path), key, n_found=len(files))
        audio_root = db.add_audio_root(root)
        spec = WindowSpec(m.sample_rate, m.window_s, hop, channels)
        if ray_address is not None:
            from explorer.distributed import embed_files_ray

            embed_files_ray(db, m, spec, root, audio_root, files, summary, **run)
        else:
            _embed_files(db, m, spec, root, audio_root, files, summary, **run)
        summary.index = _update_index(db, key, index_factory, rebuild_index)
    summary.seconds = time.perf_counter() - t0
    return summary


def _archive_files(root: Path, follow_links: bool):
    """(every file to record, sorted; the listing with its refused links and link targets)."""
    listing = list_archive(root, follow_links)
    if not listing.files and not listing.refused:
        raise IngestError(f"no audio files found under {root}")
    return sorted([*listing.files, *(p for p, _ in listing.refused)]), listing


def _hop(m, hop_s: float | None) -> float:
    """The hop in seconds: the model's window unless given; at least one sample."""
    hop = float(hop_s) if hop_s is not None else float(m.window_s)
    if hop * m.sample_rate < 1:
        raise IngestError(f"--hop must be at least one sample ({1 / m.sample_rate:.2g} s)")
    return hop


def _register(db, model: str, settings: dict, vector_dtype, root: Path, listing) -> str:
    """Check the run against what the database holds and record its model and links: the
    database's name for the run's windows (:func:`model_key`)."""
    key = model_key(db, model, settings)
    _check_not_moved(db, root)
    if vector_dtype is None and not db.has_table(embeddings_table_name(key)):
        vector_dtype = DEFAULT_STORE
    try:  # the storage type is fixed by the model's first embed
        db.register_model(key, settings, vector_dtype=vector_dtype)
    except ValueError as err:
        raise IngestError(f"--store: {err}") from None
    add_link_targets(db, listing.link_targets)
    return key


def _load_model(model: str, weights, device: str, options: dict | None):
    """The model, or one IngestError line for bad weights, device or options, before the
    database is touched."""
    import embedder

    try:
        return embedder.load_model(model, weights=weights, device=device, **(options or {}))
    except (ValueError, OSError) as err:
        raise IngestError(str(err)) from None


def _batching(m, on_cuda: bool, batch_size: int | None, workers: int | None) -> tuple[int, int]:
    """Windows per model call and decode processes: the defaults for the device, checked."""
    if batch_size is None:
        batch_size = DEFAULT_GPU_BATCH if on_cuda else DEFAULT_BATCH
    if batch_size < 1:
        raise IngestError("--batch-size must be >= 1")
    if workers is None:
        workers = default_workers(on_cuda, os.cpu_count() or 1)
    if hasattr(m, "device"):  # torch models: one forward pass per batch, not the default's slices
        m.batch_size = batch_size
    return batch_size, workers


def _check_model(m, model: str, allow_untrained: bool, store_logits: bool) -> None:
    """Random weights only on purpose; logits only from weights with a classification head."""
    import embedder

    if not m.trained and not allow_untrained:
        raise IngestError(
            f"model {model!r} has no trained weights: pass --weights PATH or "
            f"{embedder.registry.weights_hint(model)} "
            "(or --allow-untrained to build a database of random-weight vectors on purpose)"
        )
    if store_logits and not m.n_logits:
        raise IngestError(f"--store-logits: these {model} weights carry no classification head")


def _check_factory(factory: str, dim: int) -> None:
    from index.faiss_index import check_factory

    try:
        check_factory(factory, dim)
    except ValueError as err:
        raise IngestError(str(err)) from None


def _update_index(db, model: str, factory: str, rebuild: bool) -> str:
    """The FAISS index beside the table, brought up to date: its factory, or "none"."""
    # incremental: adds new windows, drops removed ones, rebuilds when the size tier changes
    if not _has_windows(db, model):  # every file failed (or turned bad): no index over windows gone
        db.drop_index(model)
        return "none"
    try:
        return db.build_index(model, factory=factory, rebuild=rebuild).factory
    except ValueError as err:  # e.g. more IVF cells than windows: the windows stay
        raise IngestError(f"windows committed, but no index built: {err}") from None


def _check_not_moved(db, root: Path) -> None:
    """A new root holding the files of a root that is gone is a moved archive, not a new one:
    embedding it would double every recording."""
    from index.roots import moved_from

    if str(root.resolve()) in db.meta.get("audio_roots", []):
        return
    old = moved_from(db, root)
    if old is not None:
        raise IngestError(
            f"{root} holds the recordings of {old}, which is gone: if the archive moved, run "
            f"`chorus roots --db {db.path} --move {old} {root.resolve()}` and embed again"
        )


def _writer(db, wait_s: float):
    """The database's writer lock, or one clear line naming the run that holds it."""
    from index.lock import DatabaseBusy

    lock = db.writer_lock(wait_s)
    try:
        return lock.acquire()
    except DatabaseBusy as err:
        raise IngestError(str(err)) from None


def _embed_files(db, m, spec, root, audio_root, files, summary, **run) -> None:
    """Plan, decode, embed and commit every file that needs it (the writer lock is held)."""
    from embedder.batching import iter_batches

    model = summary.model
    tasks, durations = plan_run(db, audio_root, root, files, summary, run)
    expected = sum(expected_windows(d, spec) for d in durations.values())
    writer = _ChunkWriter(db, model, run["chunk_windows"], summary)
    bar = progress_bar(expected, model, run["progress"])
    # the loop is done with a batch before it asks for the next: the workers may reuse its memory;
    # closing() stops the workers at once if a batch fails, not when the traceback is freed
    batches = iter_batches(
        tasks,
        spec,
        run["batch_size"],
        run["workers"],
        pin_memory=run["on_cuda"],
        reuse_memory=True,
    )
    try:
        with contextlib.closing(batches):
            for batch in batches:
                if len(batch):
                    if run["store_logits"]:  # (B, dim), (B, C) from one pass
                        writer.add(batch, *m.embed_with_logits(batch.audio))
                    else:
                        writer.add(batch, m.embed(batch.audio))  # (B, dim)
                    bar.update(len(batch))
                for done in batch.done:
                    writer.file_done(done, durations[done.key])
                writer.end_batch()
        writer.flush()
        end_bar(bar)
    finally:
        bar.close()


def _check_request(root: Path, db_path: Path, channels: str, hop_s, site) -> None:
    """Refuse bad arguments before anything is loaded or written."""
    from embedder import audio

    if not root.is_dir():
        raise IngestError(f"archive folder not found: {root}")
    if db_path.exists() and not db_path.is_dir():
        raise IngestError(f"{db_path} is a file, not a database folder")
    if channels not in audio.CHANNEL_POLICIES:
        raise IngestError(f"--channels must be one of {', '.join(audio.CHANNEL_POLICIES)}")
    if hop_s is not None and not (math.isfinite(float(hop_s)) and float(hop_s) > 0):
        raise IngestError(f"--hop must be a positive number of seconds, got {hop_s}")
    try:
        check_site_rule(site)
    except ValueError as err:
        raise IngestError(str(err)) from None


def _has_windows(db, model: str) -> bool:
    try:
        return db.windows(model).count_rows() > 0
    except KeyError:  # no table yet: nothing was ever embedded for this model
        return False


def default_workers(on_cuda: bool, cpus: int) -> int:
    """Decode processes when none are asked for: 0 on a CPU (the model is the bottleneck and needs
    the cores); on CUDA, where decoding is the bottleneck, one per core but one, up to 16."""
    return max(0, min(MAX_AUTO_WORKERS, cpus - 1)) if on_cuda else 0


class _ChunkWriter:
    """Buffers embedded windows and commits them in chunks; finishes recordings once fully written."""

    def __init__(self, db, model: str, chunk_windows: int, summary: IngestSummary):
        self.db, self.model, self.chunk, self.summary = db, model, chunk_windows, summary
        self.rows: list[dict] = []
        self.held = 0
        # finished files with windows still buffered: (key, n_windows, duration_s, damage or None)
        self.waiting: list[tuple[int, int, float, str | None]] = []
        self.failed: set[int] = set()

    def add(self, batch, vectors: np.ndarray, logits: np.ndarray | None = None) -> None:
        row = {
            "recording_id": batch.keys,
            "channel": batch.channel,
            "start_s": batch.start_s,
            "end_s": batch.end_s,
            "vector": np.asarray(vectors, np.float32),
        }
        if logits is not None:
            row["logits"] = np.asarray(logits, np.float32)  # (B, C)
        self.rows.append(row)
        self.held += len(batch)
        if self.held >= self.chunk:
            self.flush()

    def file_done(self, done, duration_s: float) -> None:
        if done.error is not None:
            self.failed.add(done.key)
            self.db.begin_recording(self.model, done.key)  # drop windows already committed
            rec = self.db.recording(done.key)
            self.db.mark_failed(rec["audio_root"], rec["path"], done.error)
            self.summary.n_failed += 1
            self.summary.failed.append((rec["path"], done.error))
            return
        if done.partial is not None:  # damaged: the length that decodes, not the header's
            self.waiting.append((done.key, done.n_windows, done.duration_s, done.partial))
        else:
            self.waiting.append((done.key, done.n_windows, duration_s, None))

    def end_batch(self) -> None:
        """Finish the files of a batch once none of their windows is still buffered: one
        commit for all of them (per-file commits made every later commit slower)."""
        if self.held == 0 and self.waiting:
            self._finish_waiting()

    def flush(self) -> None:
        if self.held:
            cols = {k: np.concatenate([r[k] for r in self.rows]) for k in self.rows[0]}
            if self.failed:  # windows of a file that failed after they were embedded
                keep = ~np.isin(cols["recording_id"], list(self.failed))
                cols = {k: v[keep] for k, v in cols.items()}
            self.db.add_embeddings(self.model, cols)  # vector (n, dim), logits (n, C)
            self.summary.n_windows += len(cols["recording_id"])
        self.rows, self.held = [], 0
        self._finish_waiting()

    def _finish_waiting(self) -> None:
        for _, _, duration, _ in self.waiting:
            self.summary.n_embedded += 1
            self.summary.hours += duration / 3600
        damaged = [(key, duration, damage) for key, _, duration, damage in self.waiting if damage]
        # status, position of the damage and decoded length before the done-marker
        mark_partial(self.db, self.summary, damaged)
        # one commit per chunk for each table: per-file commits slow every later one down
        self.db.finish_recordings(self.model, [(key, n) for key, n, _, _ in self.waiting])
        self.db.set_status([key for key, _, _, damage in self.waiting if damage is None], "ok")
        self.waiting = []
        compact_if_due(self.db, self.model)


def mark_partial(db, summary: IngestSummary, damaged: list[tuple[int, float, str]]) -> None:
    """Record damaged files as ``partial`` in one commit, and count them in ``summary``.

    Parameters
    ----------
    damaged : (recording_id, decoded length in s, where the damage is) per file; empty: nothing.
    """
    from index.schema import STATUS_PARTIAL

    if not damaged:
        return
    recs = db.recordings().set_index("recording_id")
    rows = []
    for key, duration, damage in damaged:
        rec = recs.loc[key]
        rows.append(
            dict(
                audio_root=rec["audio_root"],
                path=rec["path"],
                status=STATUS_PARTIAL,
                error=damage,
                duration_s=float(duration),
            )
        )
        summary.n_partial += 1
        summary.partial.append((rec["path"], damage))
    db.upsert_recordings(rows)


def end_bar(bar) -> None:
    """A finished run's bar ends at its total: the estimate counted windows of files that then
    failed or decoded shorter than their header said."""
    bar.total = bar.n
    bar.refresh()


def progress_bar(total: int, model: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="win", desc=f"embedding ({model})", disable=not enabled, smoothing=0.1
    )


def embed_span(
    db, model: str, path: str | Path, start_s: float | None = None, end_s: float | None = None
) -> np.ndarray:
    """Embed a span of any audio file the way the database's windows were embedded.

    A span no longer than the model's window is embedded as one window centred on it (clipped to the
    file); a longer span (or a whole file) as the mean of its unit-normalised windows at the database's
    hop.

    Returns
    -------
    np.ndarray, float32, shape (dim,)
    """
    from embedder import audio

    settings = db.meta.get("models", {}).get(model)
    if settings is None:
        raise IngestError(f"the database has no {model!r} embeddings")
    _check_weights(model, settings.get("weights_path"), settings.get("weights_sha256"))
    m = cached_model(settings.get("name", model), settings.get("weights_path"))
    info = audio.probe(path)
    start = 0.0 if start_s is None else float(start_s)
    end = info.duration_s if end_s is None else min(float(end_s), info.duration_s)
    if start >= end:
        raise IngestError(
            f"{path}: span {start}-{end} s is outside the file ({info.duration_s:.2f} s)"
        )
    if end - start <= m.window_s:
        centre = 0.5 * (start + end)
        start = max(0.0, min(centre - m.window_s / 2, info.duration_s - m.window_s))
        end = start + m.window_s
    x = audio.load(path, m.sample_rate, "mix", start, end)[0]  # (n,)
    _, windows = audio.frame(x, m.sample_rate, m.window_s, settings.get("hop_s", m.window_s))
    vecs = m.embed(windows)  # (W, dim)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
    return vecs.mean(axis=0).astype(np.float32)
