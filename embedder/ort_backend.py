"""ONNX Runtime backend: a torch network exported once with ``torch.onnx`` and run by onnxruntime.

The export is cached under ``embedder.native.cache_dir() / "onnx"``, keyed by a hash of the
module's weights, its input shape, the torch version and the opset, so a network is exported once
per machine and every later load only opens an onnxruntime session. ``onnxruntime`` (and
``onnx``, which the exporter needs) are optional (``pip install chorus[onnxruntime]``);
:func:`available` says whether they are installed. Only the convolutional part is exported:
torch's log-mel frontend (``torch.fft.rfft``) has no export through the TorchScript-based
exporter, is a small share of a batch and stays in torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedder.native import cache_dir, private_dir

OPSET = 17
INPUT, OUTPUT = "input", "output"
EXPORT_VERSION = 1  # bump when the export itself changes, so stale cached files are not reused


def available() -> bool:
    """Whether the ``onnxruntime`` and ``onnx`` packages are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def weights_digest(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    """sha256 over the module's state (names, shapes, float32 bytes) and the export settings."""
    h = hashlib.sha256()
    settings = (EXPORT_VERSION, OPSET, torch.__version__, tuple(input_shape[1:]))
    h.update(repr(settings).encode())
    for name, value in module.state_dict().items():
        arr = np.ascontiguousarray(value.detach().cpu().float().numpy())
        h.update(f"{name}{tuple(arr.shape)}".encode())
        h.update(arr.data)
    return h.hexdigest()


def export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export ``module`` (float32, eval mode) to ``path`` with a dynamic batch axis.

    Written under a temporary name and renamed, so a concurrent export or a crash never leaves a
    half-written file under the final name.
    """
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        # the TorchScript-based exporter (the dynamo one needs onnxscript) warns about traced
        # shapes: every input but the batch axis has a fixed shape here, which the key records
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                tmp,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_export(module: nn.Module, example: torch.Tensor, name: str) -> Path:
    """The exported file for ``module``, exporting it on first use."""
    folder = private_dir(cache_dir() / "onnx")
    path = folder / f"{name}-{weights_digest(module, tuple(example.shape))[:24]}.onnx"
    if not path.exists():
        export(module, example, path)
    return path


class OrtModule(nn.Module):
    """A torch-module stand-in that runs an exported network in onnxruntime on the CPU.

    Parameters
    ----------
    path : Path
        The ``.onnx`` file (one input, one output, dynamic batch axis).
    threads : int
        onnxruntime's intra-op threads.
    """

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning: between batches the CPU decodes audio
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: feed})[0])
