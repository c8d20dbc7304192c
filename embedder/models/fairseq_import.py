"""Read animal2vec checkpoints written by fairseq (data2vec 2.0 code) without fairseq or omegaconf.

A fairseq checkpoint is a ``torch.save`` dict ``{"cfg": ..., "model": state_dict, "optimizer_history": ...,
"last_optimizer_state": ..., "extra_state": ...}``. We open it with ``torch.load(map_location="cpu",
mmap=True, weights_only=True)`` so the 5-23 GB files are paged in lazily and no pickled code runs. The
configuration objects fairseq stores (omegaconf ``DictConfig``, ``argparse.Namespace``, numpy scalars,
enums) are not allowed by ``weights_only``; they are replaced by :class:`OpaqueObject` stand-ins that only
record their pickled state, from which :func:`plain` recovers ordinary dicts and values. Only
``trust=True`` falls back to a full ``weights_only=False`` unpickle (runs arbitrary code in the file).

:func:`convert` maps the state dict onto :class:`embedder.models.animal2vec.Animal2vecModel`'s key names and
infers the model shape from the tensors (and the cfg where tensors are silent, e.g. strides).
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import torch

from embedder.models.animal2vec_net import CONV_LAYERS, Animal2vecConfig, Animal2vecModel

FINETUNED_PREFIX = "w2v_encoder.w2v_model."  # encoder keys in a fine-tuned checkpoint
AUDIO = "modality_encoders.AUDIO."
HEAD_PREFIX = "w2v_encoder.proj."  # fine-tuned linear head
# Modules whose pickled classes may be replaced by inert stand-ins: configuration containers only.
STUB_MODULES = (
    "omegaconf",
    "argparse",
    "fairseq",
    "numpy",
    "typing",
    "enum",
    "pathlib",
    "collections",
)
DEFAULT_SAMPLE_RATE = 8_000  # Hz, used when the cfg does not say


class CheckpointError(ValueError):
    """A weight file that cannot be read or does not match the model; the message says why."""


class OpaqueObject:
    """Inert stand-in for a pickled class we do not import: it records constructor args and state."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _stand_ins(names: list[str]) -> list[tuple[type, str]]:
    return [(type(n.rsplit(".", 1)[-1], (OpaqueObject,), {"qualname": n}), n) for n in names]


def load_torch_file(path: str | Path, trust: bool = False):
    """``torch.load`` a checkpoint safely (cpu, mmap, weights_only) with stand-ins for cfg objects.

    Parameters
    ----------
    path : str or Path
    trust : bool
        Allow ``weights_only=False`` when the file holds objects we cannot stand in for (this executes
        code from the file: only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a zip checkpoint (legacy torch.save or another format)
        raise CheckpointError(
            f"{path}: not a torch.save zip checkpoint ({exc}); legacy-format files cannot be "
            "memory-mapped: re-save them with a recent torch"
        ) from None
    foreign = [n for n in unsafe if n.split(".", 1)[0] not in STUB_MODULES]
    if foreign and not trust:
        raise CheckpointError(
            f"{path}: the file pickles objects that weights_only loading refuses and we do not "
            f"replace: {', '.join(sorted(foreign))}. If you trust the file, pass trust=True "
            "(runs code from the file)."
        )
    try:
        if trust and foreign:
            return torch.load(str(path), map_location="cpu", mmap=True, weights_only=False)
        with torch.serialization.safe_globals(_stand_ins(unsafe)):
            return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        hint = "" if trust else " If you trust the file, pass trust=True (runs code from the file)."
        raise CheckpointError(f"{path}: cannot load checkpoint: {exc}.{hint}") from None


def plain(obj):
    """Recursively turn stand-ins (omegaconf containers, Namespaces, enums) into dicts and values."""
    if isinstance(obj, OpaqueObject):
        state = obj.state
        if obj.qualname.endswith("multiarray.scalar"):
            return _numpy_scalar(obj)
        if isinstance(state, dict) and "_content" in state:  # omegaconf DictConfig / ListConfig
            return plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:  # omegaconf value node
            return plain(state["_val"])
        if isinstance(state, dict):  # argparse.Namespace and plain objects
            return {k: plain(v) for k, v in state.items()}
        if len(obj.args) == 1:  # enums pickle as Class(value)
            return plain(obj.args[0])
        return None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def _numpy_scalar(obj: OpaqueObject):
    """A pickled numpy scalar ``scalar(dtype(code), raw bytes)`` -> Python number (None if odd)."""
    try:
        dtype, raw = obj.args
        order = dtype.state[1] if isinstance(dtype.state, tuple) else "="
        return np.frombuffer(raw, dtype=np.dtype(dtype.args[0]).newbyteorder(order))[0].item()
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Key names: fairseq (below the AUDIO modality prefix, or the main blocks) <-> ours

# (fairseq name, our name): {n} is a layer index, {m} one shifted by one (fairseq's relative positional
# encoder starts with a transpose at index 0), {p} the rest of the name. First match wins.
_RULES = [
    (AUDIO + "local_encoder.conv_layers.0.0.{p}", "features.layers.0.sinc.{p}"),
    (AUDIO + "local_encoder.conv_layers.0.2.1.{p}", "features.layers.0.norm.{p}"),
    (AUDIO + "local_encoder.conv_layers.0.3.p_swish_{p}", "features.layers.0.pswish.{p}"),
    (AUDIO + "local_encoder.conv_layers.{n}.0.{p}", "features.layers.{n}.conv.{p}"),
    (AUDIO + "local_encoder.conv_layers.{n}.2.1.{p}", "features.layers.{n}.norm.{p}"),
    (AUDIO + "project_features.1.{p}", "proj_norm.{p}"),
    (AUDIO + "project_features.2.{p}", "proj.{p}"),
    (AUDIO + "relative_positional_encoder.{m}.0.{p}", "pos_conv.{m}.conv.{p}"),
    (AUDIO + "alibi_scale", "alibi_scale"),
    (AUDIO + "context_encoder.norm.{p}", "prenet_norm.{p}"),
    (AUDIO + "context_encoder.blocks.{n}.{p}", "prenet.{n}.{p}"),
    ("blocks.{n}.{p}", "blocks.{n}.{p}"),
]
_GROUPS = {"n": r"(?P<n>\d+)", "m": r"(?P<m>\d+)", "p": r"(?P<p>[\w.]+)"}


def _regex(template: str) -> re.Pattern:
    out = re.escape(template)
    for name, group in _GROUPS.items():
        out = out.replace(re.escape("{" + name + "}"), group)
    return re.compile(out)


_COMPILED = [(_regex(fs), fs, _regex(ours), ours) for fs, ours in _RULES]


def fairseq_to_ours(key: str) -> str | None:
    """Our name for a fairseq encoder key (fine-tuning prefix removed), or None if unknown."""
    for fs_re, _, _, ours in _COMPILED:
        m = fs_re.fullmatch(key)
        if m:
            g = m.groupdict()
            if "m" in g:
                g["m"] = str(int(g["m"]) - 1)
            return ours.format(**g)
    return None


def ours_to_fairseq(key: str) -> str:
    """Inverse of :func:`fairseq_to_ours` (to name missing keys as the file would)."""
    for _, fs, ours_re, _ in _COMPILED:
        m = ours_re.fullmatch(key)
        if m:
            g = m.groupdict()
            if "m" in g:
                g["m"] = str(int(g["m"]) + 1)
            return fs.format(**g)
    return key


def _ignored(key: str) -> bool:
    """EMA teacher copies and the pretraining decoder are not part of the encoder."""
    parts = key.split(".")
    return any(p.startswith("_ema") for p in parts) or key.startswith(AUDIO + "decoder.")


# ---------------------------------------------------------------------------------------------
# Config inference


def _find(cfg, *names):
    """First value under any of ``names`` anywhere in a nested dict (breadth first)."""
    queue = [cfg]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            for name in names:
                if node.get(name) is not None:
                    return node[name]
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def parse_conv_spec(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate a fairseq conv spec such as ``"[(512, 10, 5)] + [(512, 3, 2)] * 3"`` without eval."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise CheckpointError(f"unsupported conv layer spec {spec!r}")

    layers = ev(ast.parse(spec, mode="eval"))
    if not isinstance(layers, list) or not all(
        isinstance(t, tuple) and len(t) == 3 for t in layers
    ):
        raise CheckpointError(
            f"conv layer spec {spec!r} is not a list of (channels, kernel, stride)"
        )
    return layers


def _architecture_cfg(cfg: dict) -> dict:
    """The pretrained model's cfg: fine-tuned checkpoints nest it under ``w2v_args``."""
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    inner = model.get("w2v_args") if isinstance(model, dict) else None
    return inner if isinstance(inner, dict) else cfg


def infer_config(state: dict, cfg: dict, head_classes: int = 0) -> dict:
    """Model shape from tensor shapes (our key names) and, where tensors are silent, the cfg."""

    def idx(prefix):
        return sorted({int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)})

    arch = _architecture_cfg(cfg)
    width = state["proj.weight"].shape[0]
    layers = _conv_layers(state, arch, idx("features.layers."))
    pos_idx = idx("pos_conv.")
    pos_w = state["pos_conv.0.conv.weight"] if pos_idx else None
    heads = _heads(state, arch)
    sample_rate = int(_find(cfg, "sample_rate") or DEFAULT_SAMPLE_RATE)
    # animal2vec's SincConv (nn/sinc.py) sets its narrowest band to the bank's frequency resolution,
    # ceil(sample_rate / kernel): 127 Hz for the published 8 kHz, 63-tap bank; other rates or kernels differ.
    min_band_hz = math.ceil(sample_rate / layers[0][1])
    return {
        "sample_rate": sample_rate,
        "conv_layers": [list(t) for t in layers],
        "sinc_min_band_hz": float(min_band_hz),
        "width": int(width),
        "prenet_depth": len(idx("prenet.")),
        "depth": len(idx("blocks.")),
        "heads": heads,
        "ffn_dim": int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        "pos_conv_layers": len(pos_idx),
        "pos_conv_kernel": int(pos_w.shape[-1]) if pos_w is not None else 19,
        "pos_conv_groups": int(width // pos_w.shape[1]) if pos_w is not None else 16,
        "num_classes": int(head_classes),
    }


def _conv_layers(state: dict, arch: dict, conv_idx: list[int]) -> list[tuple[int, int, int]]:
    """(channels, kernel, stride) of each feature-encoder layer, sinc layer first: the cfg's
    spec (or the published strides) checked against the tensors' sizes."""
    shapes = [tuple(state[f"features.layers.{i}.conv.weight"].shape) for i in conv_idx if i > 0]
    n_filters = state["features.layers.0.sinc.low_hz_"].shape[0]
    spec = _find(arch, "conv_feature_layers", "feature_encoder_spec")
    if isinstance(spec, str):
        layers = parse_conv_spec(spec)
        if len(layers) == len(shapes):  # a spec without the sinc layer: the published sinc kernel
            layers = [CONV_LAYERS[0]] + layers
    elif len(shapes) + 1 == len(CONV_LAYERS):  # no spec: published strides, tensors' sizes
        layers = [CONV_LAYERS[0]] + [
            (c, k, s) for (c, _, k), (_, _, s) in zip(shapes, CONV_LAYERS[1:], strict=True)
        ]
    else:
        raise CheckpointError(
            f"the cfg has no conv_feature_layers and the weights have {len(shapes) + 1} conv "
            f"layers (published: {len(CONV_LAYERS)}): cannot infer the strides"
        )
    if len(layers) != len(shapes) + 1:
        raise CheckpointError(
            f"conv spec has {len(layers)} layers but the weights have {len(shapes) + 1}"
        )
    for i, ((c_out, _c_in, k), (sc, sk, _)) in enumerate(zip(shapes, layers[1:], strict=True), 1):
        if (c_out, k) != (sc, sk):
            raise CheckpointError(
                f"conv layer {i}: weights are ({c_out} ch, kernel {k}), spec says ({sc}, {sk})"
            )
    layers[0] = (n_filters, layers[0][1], layers[0][2])
    return layers


def _heads(state: dict, arch: dict) -> int:
    """Attention heads, from the ALiBi scales' shape or (for a scalar scale) the cfg."""
    alibi = state["alibi_scale"]  # (layers or 1, 1, heads or 1, 1, 1) in data2vec 2.0
    if alibi.dim() == 5 and alibi.shape[0] != 1:
        raise CheckpointError("per-layer ALiBi scales are not supported (one scale for all blocks)")
    per_head = alibi.shape[2] if alibi.dim() == 5 else alibi.numel()
    heads = per_head if per_head > 1 else _find(arch, "num_heads")
    if heads is None:
        raise CheckpointError("cannot infer the number of heads (scalar alibi_scale, no cfg)")
    return int(heads)


# ---------------------------------------------------------------------------------------------
# Conversion

_REQUIRED = (
    "proj.weight",
    "features.layers.0.sinc.low_hz_",
    "alibi_scale",
    "blocks.0.mlp.fc1.weight",
)


def _mismatch(source: str, missing: list[str], unknown: list[str]) -> CheckpointError:
    return CheckpointError(
        f"{source}: the weights do not match the animal2vec model; "
        f"missing keys: {', '.join(missing) or 'none'}; unknown keys: {', '.join(unknown) or 'none'}"
    )


def convert(ckpt: dict, source: str = "checkpoint") -> tuple[dict, dict]:
    """Map a loaded fairseq checkpoint to (config dict, state dict in our key names).

    Accepts the pretrained layout (no prefix) and the fine-tuned one (``w2v_encoder.w2v_model.`` plus
    an optional ``w2v_encoder.proj`` head, kept as ``head``). EMA copies, the pretraining decoder and
    everything outside ``"model"`` (optimizer state, ...) are ignored; any other key is an error.

    Raises
    ------
    CheckpointError
        Naming every unknown key (as in the file) and every missing key (as the file would name it).
    """
    model_sd = ckpt.get("model")
    if not isinstance(model_sd, dict):
        raise CheckpointError(f"{source}: no 'model' state dict in the checkpoint")
    cfg = plain(ckpt.get("cfg")) or plain(ckpt.get("args")) or {}
    cfg = cfg if isinstance(cfg, dict) else {}
    finetuned = any(k.startswith(FINETUNED_PREFIX) for k in model_sd)
    prefix = FINETUNED_PREFIX if finetuned else ""
    state, origin, unknown = {}, {}, []
    for key, value in model_sd.items():
        if finetuned and key.startswith(HEAD_PREFIX):
            ours = "head." + key[len(HEAD_PREFIX) :]
        elif key.startswith(prefix):
            sub = key[len(prefix) :]
            if _ignored(sub):
                continue
            ours = fairseq_to_ours(sub)
        else:
            ours = None
        if ours is None or not torch.is_tensor(value):
            unknown.append(key)
            continue
        state[ours], origin[ours] = value, key
    absent = [prefix + ours_to_fairseq(k) for k in _REQUIRED if k not in state]
    if absent:  # the shape cannot be inferred; report what we can
        raise _mismatch(source, absent, unknown)
    head = state.get("head.weight")
    try:
        cfg_dict = infer_config(state, cfg, head_classes=head.shape[0] if head is not None else 0)
    except KeyError as exc:  # a tensor the shape inference needs (e.g. one conv layer's weight)
        raise _mismatch(source, [_fairseq_name(exc.args[0], prefix)], unknown) from None
    cfg_dict["extra"] = {"imported_from": "fairseq", "finetuned": finetuned}
    alibi = state["alibi_scale"].reshape(-1)  # fairseq (1, 1, H, 1, 1) or (1, 1, 1, 1, 1)
    state["alibi_scale"] = alibi.expand(cfg_dict["heads"]).clone() if alibi.numel() == 1 else alibi
    with torch.device("meta"):
        expected = Animal2vecModel(Animal2vecConfig.from_dict(cfg_dict)).state_dict()
    missing = [_fairseq_name(k, prefix) for k in expected if k not in state]
    unknown += [origin[k] for k in state if k not in expected]
    wrong = [
        f"{origin[k]} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unknown or wrong:
        err = _mismatch(source, missing, unknown)
        raise CheckpointError(f"{err}; wrong shapes: {', '.join(wrong)}") if wrong else err
    return cfg_dict, state


def _fairseq_name(ours: str, prefix: str) -> str:
    if ours.startswith("head."):
        return HEAD_PREFIX + ours[len("head.") :]
    return prefix + ours_to_fairseq(ours)


def import_fairseq(path: str | Path, trust: bool = False) -> tuple[dict, dict]:
    """Read a fairseq animal2vec checkpoint file -> (config dict, state dict in our names)."""
    ckpt = load_torch_file(path, trust=trust)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a fairseq checkpoint dict")
    return convert(ckpt, source=str(path))
