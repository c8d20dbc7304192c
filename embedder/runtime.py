"""What the torch models share at inference: device choice, precision, and the batched run loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from embedder.base import Embedder
from embedder.native import cpu_flags

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Instructions that multiply bf16 natively. Without them oneDNN's bf16 convolutions either refuse
# to run (no AVX-512) or emulate bf16 with fp32 arithmetic plus conversions (no faster than fp32).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_problem() -> str | None:
    """Why bf16 inference would not be fast on this CPU, or None where it is.

    Decided by torch's public ``torch.backends.cpu.get_cpu_capability()`` (``"AVX512"`` means
    AVX-512 F/BW/VL/DQ, what oneDNN's bf16 convolutions need; ``ATEN_CPU_CAPABILITY`` lowers it)
    and, where the OS reports them, the CPU's native bf16 instructions.

    Returns
    -------
    str or None
        A short reason, e.g. ``"torch reports CPU capability AVX2, not AVX512"``.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX512":
        return f"torch reports CPU capability {capability}, not AVX512"
    flags = cpu_flags()
    if flags and not flags.intersection(BF16_CPU_FLAGS):
        return "the CPU has AVX-512 but no native bf16 instructions (avx512_bf16 or amx_bf16)"
    return None


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda > mps > cpu; anything else is passed to ``torch.device``.

    For CUDA this also turns on cuDNN's algorithm search: the embedders feed fixed window shapes,
    so the search runs once per batch shape and then picks the fastest depthwise kernels.
    """
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no usable CUDA GPU")
    if dev.type == "mps" and not (torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for, but MPS is not available here")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def check_run_options(device: torch.device, batch_size: int, precision: str | None) -> str:
    """Validate ``batch_size`` and return the precision: bf16 autocast on CUDA, fp32 elsewhere.

    Raises
    ------
    ValueError
        A bad batch size or precision, or bf16 asked for on a CPU that cannot run it fast
        (see :func:`cpu_bf16_problem`); the message is one line.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu":
        problem = cpu_bf16_problem()
        if problem:
            raise ValueError(f"precision bf16 is not supported on this CPU ({problem}): use fp32")
    return precision


class PinnedStage:
    """A reusable page-locked host buffer for uploading batches to CUDA.

    One copy into pinned memory, then an asynchronous DMA; allocating pinned memory per batch would
    cost more than the copy. The caller must wait for the device (e.g. read the result back) before
    the next :meth:`upload` overwrites the buffer.
    """

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def upload(self, x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        """(n, ...) host array or tensor -> the same on ``device``."""
        src = torch.as_tensor(x)
        buf = self.buffer
        if buf is None or buf.shape[0] < len(src) or buf.shape[1:] != src.shape[1:]:
            buf = self.buffer = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
        staged = buf[: len(src)]
        staged.copy_(src)
        return staged.to(device, non_blocking=True)


class TorchEmbedder(Embedder):
    """An :class:`Embedder` backed by a torch module: subclasses set ``device``, ``batch_size``
    (windows per forward pass) and ``precision`` (a key of :data:`PRECISIONS`)."""

    device: torch.device
    batch_size: int
    precision: str

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (none for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def run(
        self, fn: Callable[[torch.Tensor], torch.Tensor], batch: np.ndarray, tail: tuple[int, ...]
    ) -> np.ndarray:
        """Apply ``fn`` to ``batch`` in slices of ``batch_size``: (n, window_samples) -> (n, *tail)."""
        x = self.check_batch(batch)  # (n, window_samples)
        outs = [np.zeros((0, *tail), dtype=np.float32)]
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(x), self.batch_size):
                xb = self.upload(x[start : start + self.batch_size])
                # .cpu() waits for the device, so the staging buffer is free again afterwards
                outs.append(fn(xb).float().cpu().numpy())
        return np.concatenate(outs)

    def upload(self, x: np.ndarray) -> torch.Tensor:
        """(n, window_samples) host windows -> a tensor on ``device`` (pinned staging for CUDA)."""
        src = torch.from_numpy(np.ascontiguousarray(x))
        if self.device.type != "cuda":
            return src.to(self.device)
        if src.is_pinned():  # already page-locked (iter_batches(pin_memory=True)): no extra copy
            return src.to(self.device, non_blocking=True)
        if getattr(self, "_stage", None) is None:
            self._stage = PinnedStage()
        return self._stage.upload(src, self.device)
