"""Shared-memory batch slots that decode workers pack into and reuse: :class:`Ring`.

:func:`embedder.batching.iter_batches` (``reuse_memory=True``) gives each decode worker a few
slots of ``(batch_size, window_samples)`` float32 in shared memory. A worker packs each batch into
its next free slot and sends the main process only the slot's number (the slot itself once, on its
first trip); the main process hands the slot back when the consumer asks for the next batch. So no
batch needs new memory (whose page faults were most of a worker's kernel time) and, on CUDA,
each slot is page-locked in place once instead of every batch being copied into pinned memory.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from embedder.batching import Batch

SLOT_WAIT_S = 5.0  # s; how often a worker waiting for a free slot checks that its parent lives


def shared_tensor(shape: tuple[int, int]) -> torch.Tensor:
    """An uninitialised float32 tensor in shared memory, which crosses to the main process as is;
    packing into it saves a copy of every window (and the page faults of a second buffer).

    ``share_memory_()`` moves a storage into shared memory by copying it. From a fresh
    ``torch.empty`` that copy reads untouched pages (no public API allocates the shared block
    directly). A :class:`Ring` slot pays it once, then is reused for every batch."""
    return torch.empty(shape).share_memory_()


@dataclass(frozen=True)
class SlotRef:
    """Stands in for a batch's audio on its way from a worker: the ring slot holding it, its rows,
    and, the first time the slot travels, the slot's shared tensor itself."""

    worker: int
    slot: int
    rows: int
    tensor: torch.Tensor | None = None


class Stopped(Exception):
    """Raised in a worker waiting for a ring slot when the main process has stopped reading."""


class Ring:
    """Shared-memory batch slots that the decode workers pack into, reused in turn.

    Worker ``w`` owns ``depth`` slots and fills them round-robin; the semaphore ``free[w]`` counts
    those the main process has handed back. The main process hands a slot back when the consumer
    comes back for the next batch. The DataLoader delivers each worker's batches in the order they
    were made, so slots come back in the order they were filled, and the slot a worker takes next is
    always the one handed back longest ago. The consumer holds one batch at a time and ``depth`` > 1,
    so a worker waiting for a slot never waits on a batch that the main process is waiting for.
    When the consumer stops early, :meth:`close` wakes the waiting workers with ``stop`` set, and
    they end without writing: the batch the consumer still holds stays intact.

    A worker allocates each slot when it first needs it (so that 16 workers allocate in parallel,
    and a small archive allocates little) and sends it to the main process once; each slot is its
    own mapping, so the main process can page-lock it for CUDA on its own, in place.
    """

    def __init__(self, workers: int, depth: int, batch_size: int, window: int) -> None:
        self.depth, self.batch_size, self.window = depth, batch_size, window
        # the default start method, as the DataLoader's (read now: the user may have set it)
        self.free = [multiprocessing.Semaphore(depth) for _ in range(workers)]
        self.stop = multiprocessing.Event()
        self.worker = 0  # which worker this copy of the ring is in (set in the worker)
        self.parent = os.getppid()  # the process that hands slots back (set in the worker)
        self.taken = 0  # slots this worker has taken so far
        self.slots: dict[tuple[int, int], torch.Tensor] = {}  # (worker, slot) -> (batch, window)
        self.pinned: list[torch.Tensor] = []  # main process: slots page-locked in place
        self.pinning = True  # main process: False once CUDA has refused one

    def start(self, worker: int) -> None:
        """In a worker, before its first batch: which worker it is, and whose child."""
        self.worker, self.parent = worker, os.getppid()

    def take(self, shape: tuple[int, int]) -> np.ndarray:
        """In a worker: wait for this worker's next slot and return its first ``rows`` as an array."""
        rows, window = shape
        if rows > self.batch_size or window != self.window:
            raise ValueError(f"batch {shape} does not fit a ring slot {self.batch_size, window}")
        while not self.free[self.worker].acquire(timeout=SLOT_WAIT_S):
            if os.getppid() != self.parent:  # the main process died: nobody will hand one back
                raise SystemExit(1)
        if self.stop.is_set():  # woken by close(): the consumer may still hold this slot
            raise Stopped
        key = (self.worker, self.taken % self.depth)
        self.taken += 1
        if key not in self.slots:
            self.slots[key] = shared_tensor((self.batch_size, self.window))
        return self.slots[key][:rows].numpy()

    def fill(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """In a worker: batches packed by :meth:`take`, their audio replaced by a :class:`SlotRef`."""
        sent = set()
        try:
            for batch in batches:
                if len(batch):
                    slot = (self.taken - 1) % self.depth
                    tensor = self.slots[self.worker, slot]
                    assert batch.audio.ctypes.data == tensor.data_ptr()
                    first = slot not in sent
                    sent.add(slot)
                    batch.audio = SlotRef(self.worker, slot, len(batch), tensor if first else None)
                yield batch
        except Stopped:
            return

    def receive(self, batch: Batch, pin: bool) -> SlotRef | None:
        """In the main process: point ``batch.audio`` at its slot (page-locked first if ``pin``);
        returns the slot to :meth:`release` once the consumer is done with the batch."""
        ref = batch.audio
        if not isinstance(ref, SlotRef):
            return None  # an empty batch (end-of-file markers only)
        key = (ref.worker, ref.slot)
        if ref.tensor is not None:  # the slot's first trip
            self.slots[key] = ref.tensor
            if pin:
                self._pin(ref.tensor)
        batch.audio = self.slots[key][: ref.rows].numpy()  # (B, window_samples)
        return ref

    def release(self, ref: SlotRef | None) -> None:
        """In the main process: hand a slot back to its worker for refilling."""
        if ref is not None:
            self.free[ref.worker].release()

    def close(self) -> None:
        """Unpin the slots, then wake the workers that wait for one, telling them to stop."""
        if self.pinned:
            torch.cuda.synchronize()  # no upload may still be reading a slot
            for t in self.pinned:
                torch.cuda.cudart().cudaHostUnregister(t.data_ptr())
            self.pinned = []
        self.stop.set()
        for free in self.free:
            for _ in range(self.depth):
                free.release()

    def _pin(self, slot: torch.Tensor) -> None:
        """Page-lock one slot in place (its pages exist by then: the worker has filled it)."""
        if not self.pinning:
            return
        try:
            cudart = torch.cuda.cudart()
            nbytes = slot.numel() * slot.element_size()
            flags = 1  # cudaHostRegisterPortable: page-locked for every device, not the current one
            torch.cuda.check_error(cudart.cudaHostRegister(slot.data_ptr(), nbytes, flags))
        except Exception as err:  # no CUDA here or the driver refused: uploads copy instead
            print(
                f"chorus: batches not page-locked in place ({err}): copying them", file=sys.stderr
            )
            self.pinning = False
            _clear_cuda_error()
            return
        self.pinned.append(slot)


def _clear_cuda_error() -> None:
    """Reset the CUDA runtime's last error after a refused registration. Torch checks that error
    after every kernel launch and would otherwise raise it at the next one, far from its cause;
    the check reads and resets it, so one launch here, its error caught, leaves it clean."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    try:
        torch.zeros(1, device=torch.cuda.current_device()).add_(1)
    except RuntimeError:
        pass
