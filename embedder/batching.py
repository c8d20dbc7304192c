"""Archive → fixed-size batches of windows, decoded in worker processes.

Decoding and resampling run in ``workers`` processes (a torch ``DataLoader`` over an iterable dataset,
files sharded round-robin), each streaming its files block by block so that no recording is ever held
in memory whole. Windows are packed into batches of exactly ``batch_size`` **across files** (only the
last batch of a stream may be short), so the model sees full batches even for an archive of short
clips. :func:`iter_batches` packs inside the workers and hands the main process finished batches
through shared memory (optionally page-locked for CUDA); :func:`batch_windows` is the packer itself.
Every file ends with a :class:`FileDone` marker carrying its window count or its error, which is what
lets the ingest mark a recording complete only after all its windows are written.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.utils.data as tud

from embedder import audio, flac
from embedder.ring import Ring, shared_tensor

PREFETCH_CHUNKS = 2  # chunks each worker may decode ahead of the model
SHM_DIR = "/dev/shm"  # where torch puts tensors shared between processes (Linux)


@dataclass(frozen=True)
class FileTask:
    """One file to decode; ``key`` is the caller's id for it (the recording id)."""

    key: int
    path: str


@dataclass
class WindowChunk:
    """Consecutive windows of one file and channel. ``audio`` is float32 ``(W, window_samples)``."""

    key: int
    channel: int
    start_s: np.ndarray
    end_s: np.ndarray
    audio: np.ndarray


@dataclass(frozen=True)
class FileDone:
    """End of one file: ``n_windows`` yielded before the end, or ``error`` if decoding failed part-way.

    ``partial`` says where a damaged file's damage is (all that decodes of it was yielded), and
    ``duration_s`` is then the length that decoded.
    """

    key: int
    n_windows: int
    error: str | None = None
    partial: str | None = None
    duration_s: float | None = None


@dataclass
class Batch:
    """Up to ``batch_size`` windows from any files.

    ``audio`` is float32 ``(B, window_samples)``; ``keys``, ``channel``, ``start_s``, ``end_s`` are ``(B,)``.
    ``done`` lists the files whose last window is in this batch or an earlier one (and which were not
    reported before), in stream order.
    """

    audio: np.ndarray
    keys: np.ndarray
    channel: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    done: list[FileDone] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread: ``audio`` (a tensor then) into page-locked memory."""
        if self.audio.numel():
            self.audio = self.audio.pin_memory()
        return self


@dataclass(frozen=True)
class WindowSpec:
    """How files are cut: the model's rate and window, the archive's hop, tail and channel policy."""

    sample_rate: int
    window_s: float
    hop_s: float
    channels: str = "mix"
    min_tail_s: float = audio.MIN_TAIL_S


def iter_file(task: FileTask, spec: WindowSpec) -> Iterator[WindowChunk | FileDone]:
    """Windows of one file as chunks, then its :class:`FileDone`; decoding errors end the file, not the run."""
    n = 0
    try:
        for wb in audio.iter_windows(
            task.path,
            spec.sample_rate,
            spec.window_s,
            spec.hop_s,
            channels=spec.channels,
            min_tail_s=spec.min_tail_s,
        ):
            n += len(wb.start_s)
            yield WindowChunk(task.key, wb.channel, wb.start_s, wb.end_s, wb.audio)
    except audio.PartialAudio as err:  # damaged: its windows are all out, and it says where
        yield FileDone(task.key, n, partial=str(err), duration_s=err.duration_s)
        return
    except audio.AudioError as err:
        yield FileDone(task.key, n, str(err))
        return
    except Exception as err:  # a decoder bug must not end a multi-day run: record it, go on
        yield FileDone(task.key, n, f"{type(err).__name__}: {err}")
        return
    yield FileDone(task.key, n)


def _identity(x):
    return x


def iter_archive(
    tasks: list[FileTask], spec: WindowSpec, workers: int = 0
) -> Iterator[WindowChunk | FileDone]:
    """Decode ``tasks`` into a stream of chunks and end markers, in ``workers`` processes (0: in-process).

    Files are dealt round-robin to workers; the DataLoader returns the workers' items interleaved, and
    within one file the order is preserved.
    """
    if workers <= 0 or len(tasks) <= 1:
        for task in tasks:
            yield from iter_file(task, spec)
        return

    share = _use_shared_memory(workers, audio.BATCH_WINDOWS, spec)
    for item in _in_workers(_ChunkJob(spec, share), tasks, workers):
        if share and isinstance(item, WindowChunk):
            item.audio = item.audio.numpy()  # (W, window_samples), a view of the shared block
        yield item


def iter_batches(
    tasks: list[FileTask],
    spec: WindowSpec,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    reuse_memory: bool = False,
) -> Iterator[Batch]:
    """Decode ``tasks`` and pack their windows into batches of ``batch_size`` across files.

    With ``workers`` processes, each worker packs the batches of its own files, so the main process
    receives finished batches through shared memory and never copies a window itself (re-packing
    in the main process capped GPU runs, benchmarks/RESULTS.md).
    Each worker's last batch may be short. Markers keep the rule of :func:`batch_windows`: a file's
    :class:`FileDone` travels with the batch that holds its last window, never earlier.

    ``pin_memory``: batches arrive in page-locked memory, so that the upload to CUDA is a single
    asynchronous copy (needs CUDA). Without ``reuse_memory`` a thread of the main process copies each
    batch into page-locked memory while the model runs.

    ``reuse_memory``: the workers pack into a fixed ring of shared-memory slots (:class:`Ring`)
    instead of a fresh block per batch, which saves the page faults of new memory and, with
    ``pin_memory``, the copy (each slot is page-locked in place, once). A batch's ``audio`` is then
    only valid until the next batch is requested: copy it to keep it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers <= 0 or len(tasks) <= 1:
        yield from batch_windows(iter_archive(tasks, spec), batch_size)
        return

    # pinning works on tensors: without shared memory the batches travel as arrays, unpinned
    share = _use_shared_memory(workers, batch_size, spec)
    n_workers = min(workers, len(tasks))
    win = int(round(spec.sample_rate * spec.window_s))
    ring = Ring(n_workers, PREFETCH_CHUNKS + 1, batch_size, win) if share and reuse_memory else None

    job = _BatchJob(spec, batch_size, share, ring)
    loader = _in_workers(job, tasks, workers, pin_memory and share and ring is None)
    if ring is None:
        for batch in loader:
            if share:
                batch.audio = batch.audio.numpy()  # (B, window_samples), shared or pinned memory
            yield batch
        return
    batches = iter(loader)  # starts the workers: page-lock only after they have forked
    try:
        for batch in batches:
            ref = ring.receive(batch, pin_memory)
            yield batch
            ring.release(ref)  # the consumer is back for the next batch: the slot is free again
    finally:
        ring.close()


def _empty(shape: tuple[int, int]) -> np.ndarray:
    return np.empty(shape, np.float32)  # (B, win)


def _to_tensor(a: np.ndarray):
    """A worker's array as a torch tensor, which crosses to the main process through shared memory;
    a numpy array would be pickled through a pipe instead, several times slower."""
    return torch.from_numpy(a)


def shared_memory_free(path: str = SHM_DIR) -> float:
    """Bytes free for shared memory; infinite where there is no such folder to check (not Linux)."""
    try:
        return float(shutil.disk_usage(path).free)
    except OSError:
        return float("inf")


def _use_shared_memory(workers: int, windows_per_item: int, spec: WindowSpec) -> bool:
    """Shared memory if it has room for what the workers keep in flight, else pipes, with a notice.

    A container's default /dev/shm (64 MB in Docker) would otherwise kill the workers with SIGBUS.
    """
    win = int(round(spec.sample_rate * spec.window_s))
    # per worker: PREFETCH_CHUNKS items queued, plus the one the main process is using
    need = workers * (PREFETCH_CHUNKS + 1) * windows_per_item * win * 4
    free = shared_memory_free()
    if free >= need:
        return True
    print(
        f"chorus: {SHM_DIR} has {free / 2**20:.0f} MB free, less than the ~{need / 2**20:.0f} MB "
        f"{workers} decode workers may need: sending windows through pipes (slower). Raise the "
        "limit (docker run --shm-size=...) or use fewer workers.",
        file=sys.stderr,
    )
    return False


@dataclass
class _ChunkJob:
    """A worker's part of :func:`iter_archive`: its files' chunks (in shared memory if ``share``)."""

    spec: WindowSpec
    share: bool

    def __call__(self, mine: list[FileTask], worker: int) -> Iterator[WindowChunk | FileDone]:
        for task in mine:
            for item in iter_file(task, self.spec):
                if self.share and isinstance(item, WindowChunk):
                    item.audio = _to_tensor(item.audio)
                yield item


@dataclass
class _BatchJob:
    """A worker's part of :func:`iter_batches`: its files' windows packed into batches, in a
    :class:`Ring` slot, a fresh shared-memory block (``share``) or a plain array."""

    spec: WindowSpec
    batch_size: int
    share: bool
    ring: Ring | None = None

    def __call__(self, mine: list[FileTask], worker: int) -> Iterator[Batch]:
        chunks = (item for task in mine for item in iter_file(task, self.spec))
        if self.ring is not None:
            self.ring.start(worker)  # this process's copy of the ring
            yield from self.ring.fill(batch_windows(chunks, self.batch_size, self.ring.take))
            return
        packed: dict[int, torch.Tensor] = {}  # address -> shared tensor, of the batch being packed

        def alloc(shape: tuple[int, int]) -> np.ndarray:
            t = shared_tensor(shape)
            packed[t.data_ptr()] = t
            return t.numpy()

        for batch in batch_windows(chunks, self.batch_size, alloc if self.share else _empty):
            if self.share:  # windows were packed straight into shared memory: nothing to copy
                tensor = packed.pop(batch.audio.ctypes.data, None)
                batch.audio = _to_tensor(batch.audio) if tensor is None else tensor
            yield batch


class _Files(tud.IterableDataset):
    """Each DataLoader worker's round-robin share of ``tasks``, decoded by ``job(files, worker)``.
    A module-level class of plain fields, so that it also reaches workers that are spawned rather
    than forked (macOS, Windows, and Linux from Python 3.14 on)."""

    def __init__(self, job, tasks: list[FileTask]) -> None:
        self.job, self.tasks = job, tasks

    def __iter__(self):
        info = tud.get_worker_info()
        if info is None:
            return self.job(self.tasks, 0)
        return self.job(self.tasks[info.id :: info.num_workers], info.id)


def _in_workers(job, tasks: list[FileTask], workers: int, pin_memory: bool = False):
    """Items of ``job(files, worker)`` for each worker's share of ``tasks``, interleaved."""
    flac.available()  # build the decoder once, here, rather than in every worker at its first file
    return tud.DataLoader(
        _Files(job, tasks),
        batch_size=None,
        num_workers=min(workers, len(tasks)),
        collate_fn=_identity,
        prefetch_factor=PREFETCH_CHUNKS,
        pin_memory=pin_memory,
    )


def batch_windows(
    items: Iterable[WindowChunk | FileDone], batch_size: int, alloc=None
) -> Iterator[Batch]:
    """Re-pack a chunk stream into batches of ``batch_size`` windows across files.

    ``alloc(shape)`` makes each batch's float32 audio array (default: ``np.empty``; the decode
    workers pass views of shared memory).

    A file's :class:`FileDone` travels with the batch that holds its last window (or with an empty batch
    if its windows have all gone out already), never later: the ingest can then finish that recording
    as soon as the batch is written.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts: list[WindowChunk] = []
    pending: list[tuple[int, FileDone]] = []  # (stream position of the file's end, marker)
    received = emitted = 0
    for item in items:
        if isinstance(item, FileDone):
            if received == emitted:
                yield _pack([], [item])
            else:
                pending.append((received, item))
            continue
        parts.append(item)
        received += len(item.start_s)
        while received - emitted >= batch_size:
            take, parts = _split(parts, batch_size)
            emitted += batch_size
            ready = [d for pos, d in pending if pos <= emitted]
            pending = [(pos, d) for pos, d in pending if pos > emitted]
            yield _pack(take, ready, alloc)
    if parts or pending:
        yield _pack(parts, [d for _, d in pending], alloc)


def _split(parts: list[WindowChunk], n: int) -> tuple[list[WindowChunk], list[WindowChunk]]:
    """First ``n`` windows of ``parts``, and the rest."""
    take, rest, need = [], [], n
    for i, c in enumerate(parts):
        w = len(c.start_s)
        if w <= need:
            take.append(c)
            need -= w
        else:
            if need:
                take.append(_slice(c, 0, need))
            rest = [_slice(c, need, w)] + parts[i + 1 :]
            break
        if need == 0:
            rest = parts[i + 1 :]
            break
    return take, rest


def _slice(c: WindowChunk, a: int, b: int) -> WindowChunk:
    return WindowChunk(c.key, c.channel, c.start_s[a:b], c.end_s[a:b], c.audio[a:b])


def _pack(parts: list[WindowChunk], done: list[FileDone], alloc=None) -> Batch:
    if not parts:
        empty = np.zeros(0)
        return Batch(
            np.zeros((0, 0), np.float32),
            empty.astype(np.int64),
            empty.astype(np.int32),
            empty,
            empty,
            list(done),
        )
    audio = (alloc or _empty)((sum(len(c.start_s) for c in parts), parts[0].audio.shape[1]))
    np.concatenate([c.audio for c in parts], out=audio, casting="same_kind")
    return Batch(
        audio=audio,
        keys=np.concatenate([np.full(len(c.start_s), c.key, np.int64) for c in parts]),
        channel=np.concatenate([np.full(len(c.start_s), c.channel, np.int32) for c in parts]),
        start_s=np.concatenate([c.start_s for c in parts]).astype(np.float64),
        end_s=np.concatenate([c.end_s for c in parts]).astype(np.float64),
        done=list(done),
    )
