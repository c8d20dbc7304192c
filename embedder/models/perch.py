"""The ``perch`` embedder: Perch-2.0-style EfficientNet-B3, 5 s at 32 kHz -> 1536-d, in plain PyTorch.

``load(weights)`` accepts our checkpoint (``.pt``), ``.npz`` / ``.safetensors`` keyed by Flax paths, or the
Kaggle SavedModel folder (TF tensor bundle with ``_tf_var_leaves/<N>`` names). Everything is checked
strictly against the model: a missing, unused or mis-shaped tensor is an error that names it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from embedder import ort_backend
from embedder.models.perch_net import (
    EMBED_DIM,
    PerchConfig,
    PerchNet,
    calibrate_batchnorm,
    calibration_audio,
)
from embedder.runtime import TorchEmbedder, check_run_options, resolve_device
from embedder.weights import (
    WeightsError,
    check_state_dict,
    is_checkpoint,
    load_checkpoint,
    load_strict,
    read_labels,
    read_tensors,
    sha256_file,
)

__all__ = [
    "PerchConfig",
    "PerchEmbedder",
    "PerchNet",
    "import_perch",
    "load",
    "random_net",
    "state_dict_to_flax",
]

DEFAULT_BATCH_SIZE = 16  # windows per forward pass
SEED = 0  # random-init seed for weights=None
HEAD_LEAVES = ("bias", "protop_kernel", "prototypes")  # sorted leaf names of the prototype head
HEAD_LEAF_BY_NDIM = {1: "bias", 2: "protop_kernel", 3: "prototypes"}
HEAD_PATH_PREFIX = "params/ProtoHead"  # used only when a bundle gives no names
# a leaf's value, and nothing else (optimizer slots share the leaf number)
TF_LEAF_RE = re.compile(r"^_tf_var_leaves/(\d+)(?:/\.ATTRIBUTES/VARIABLE_VALUE)?$")
IGNORED_BUNDLE_VARS = ("save_counter",)  # bookkeeping variables that may sit beside the leaves
LOAD_OPTIONS = (
    "batch_size",
    "precision",
    "channels_last",
    "compile",
    "labels",
    "fuse_bn",
    "micro_batch",
    "cpu_workers",
    "backend",
)
BACKENDS = ("auto", "torch", "onnxruntime")
TORCH_ONLY_OPTIONS = ("channels_last", "compile", "micro_batch", "cpu_workers")
# CPU cache blocking: windows per slice, and how many blocks run sliced (the first 8 = stages 1-3,
# down to 63x16); chosen by measurement (benchmarks/RESULTS.md, "Perch CPU").
CPU_MICRO_BATCH = (2, 8)


# ------------------------------------------------------------------------------- Flax path mapping
def _bn_paths(scope: str, bn: str, key: str) -> list[tuple[str, str, str]]:
    return [
        (f"params/{scope}/{bn}/scale", f"{key}.bn.weight", "vec"),
        (f"params/{scope}/{bn}/bias", f"{key}.bn.bias", "vec"),
        (f"batch_stats/{scope}/{bn}/mean", f"{key}.bn.running_mean", "vec"),
        (f"batch_stats/{scope}/{bn}/var", f"{key}.bn.running_var", "vec"),
    ]


def flax_mapping(config: PerchConfig) -> dict[str, tuple[str, str]]:
    """Backbone Flax path -> (our state_dict key, layout kind "conv" | "dense" | "vec")."""
    rows = [("params/Stem_0/Conv_0/kernel", "backbone.stem.conv.weight", "conv")]
    rows += _bn_paths("Stem_0", "BatchNorm_0", "backbone.stem")
    for i, (_, _, _, _, expand) in enumerate(config.block_specs()):
        scope, key = f"MBConv_{i}", f"backbone.blocks.{i}"
        parts = [("Depthwise", "depthwise"), ("Project", "project")]
        if expand != 1:
            parts.insert(0, ("Expand", "expand"))
        for flax_name, ours in parts:
            rows.append(
                (f"params/{scope}/{flax_name}Conv/kernel", f"{key}.{ours}.conv.weight", "conv")
            )
            rows += _bn_paths(scope, f"{flax_name}BatchNorm", f"{key}.{ours}")
        for flax_name, ours in (("Reduce", "reduce"), ("Expand", "expand")):
            se = f"params/{scope}/SqueezeAndExcitation_0/{flax_name}"
            rows.append((f"{se}/kernel", f"{key}.se.{ours}.weight", "dense"))
            rows.append((f"{se}/bias", f"{key}.se.{ours}.bias", "vec"))
    rows.append(("params/Head_0/Conv_0/kernel", "backbone.head.conv.weight", "conv"))
    rows += _bn_paths("Head_0", "BatchNorm_0", "backbone.head")
    return {path: (key, kind) for path, key, kind in rows}


def flax_leaf_order(config: PerchConfig) -> list[str]:
    """Backbone Flax paths in JAX tree-flatten order (keys sorted at every level).

    Position N in this list is the ``_tf_var_leaves/<N>`` variable of the SavedModel; the head's
    leaves follow it.
    """
    return sorted(flax_mapping(config), key=lambda p: tuple(p.split("/")))


def _to_flax_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":  # OIHW -> HWIO
        return (shape[2], shape[3], shape[1], shape[0])
    if kind == "dense":  # (out, in) -> (in, out)
        return (shape[1], shape[0])
    return shape


def _to_torch(array: np.ndarray, kind: str) -> torch.Tensor:
    a = np.asarray(array, dtype=np.float32)
    if kind == "conv":  # HWIO (H = time, W = mel) -> OIHW; depthwise (k, k, 1, C) -> (C, 1, k, k)
        a = a.transpose(3, 2, 0, 1)
    elif kind == "dense":  # (in, out) -> Linear weight (out, in)
        a = a.T
    return torch.from_numpy(np.ascontiguousarray(a))


def bundle_to_flax(tensors: dict[str, np.ndarray], config: PerchConfig) -> dict[str, np.ndarray]:
    """Rename ``_tf_var_leaves/<N>`` bundle variables to Flax paths (head leaves by their rank)."""
    order = flax_leaf_order(config)
    out: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        m = TF_LEAF_RE.match(name)
        if m is None:
            if name.split("/")[0] in IGNORED_BUNDLE_VARS:
                continue
            path = name  # reported as unused by the strict check
        elif (n := int(m.group(1))) < len(order):
            path = order[n]
        elif n < len(order) + len(HEAD_LEAVES) and array.ndim in HEAD_LEAF_BY_NDIM:
            path = f"{HEAD_PATH_PREFIX}/{HEAD_LEAF_BY_NDIM[array.ndim]}"
        else:
            path = name
        if path in out:  # two variables for one weight: never let one silently win
            raise WeightsError(f"bundle variables {name} and another one both map to {path}")
        out[path] = array
    return out


def _find_head(tensors: dict[str, np.ndarray], known: set[str]) -> dict[str, str]:
    """Leaf name -> path for the prototype head among the tensors that are not backbone paths."""
    found: dict[str, list[str]] = {leaf: [] for leaf in HEAD_LEAVES}
    for path in tensors:
        leaf = path.rsplit("/", 1)[-1]
        if path not in known and leaf in found:
            found[leaf].append(path)
    if not found["prototypes"]:
        return {}
    for leaf, paths in found.items():
        if len(paths) != 1:
            what = "missing" if not paths else f"ambiguous ({', '.join(paths)})"
            raise WeightsError(f"prototype head: tensor '*/{leaf}' is {what}")
    return {leaf: paths[0] for leaf, paths in found.items()}


def flax_to_state_dict(
    tensors: dict[str, np.ndarray], config: PerchConfig, source: str
) -> tuple[PerchConfig, dict[str, torch.Tensor]]:
    """Convert Flax-path tensors to our state_dict, checking every name and shape.

    The prototype head, if present, sets ``config.n_classes`` / ``n_prototypes`` from its shapes.
    """
    config = PerchConfig.from_dict(config.to_dict())  # the head may change n_classes
    mapping = flax_mapping(config)
    head = _find_head(tensors, set(mapping))
    if head:
        protos = tensors[head["prototypes"]]
        config.n_classes, config.n_prototypes = int(protos.shape[0]), int(protos.shape[-1])
    else:
        config.n_classes = 0
    model_shapes = {k: tuple(v.shape) for k, v in PerchNet(config).state_dict().items()}
    expected = {p: _to_flax_shape(model_shapes[k], kind) for p, (k, kind) in mapping.items()}
    for leaf, path in head.items():
        expected[path] = model_shapes[f"proto_head.{leaf}"]
        mapping[path] = (f"proto_head.{leaf}", "vec")
    check_state_dict(expected, {k: tuple(np.shape(v)) for k, v in tensors.items()}, source)
    state = {key: _to_torch(tensors[p], kind) for p, (key, kind) in mapping.items()}
    for key in model_shapes:  # Flax keeps no BatchNorm step counter
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    return config, state


def state_dict_to_flax(
    state: dict[str, torch.Tensor], config: PerchConfig
) -> dict[str, np.ndarray]:
    """Inverse of :func:`flax_to_state_dict` (unfused state_dict -> Flax-path arrays).

    Head leaves are named ``params/ProtoHead/{bias,protop_kernel,prototypes}``.
    """
    out = {}
    for path, (key, kind) in flax_mapping(config).items():
        a = state[key].detach().cpu().float().numpy()
        if kind == "conv":  # OIHW -> HWIO
            a = a.transpose(2, 3, 1, 0)
        elif kind == "dense":
            a = a.T
        out[path] = np.ascontiguousarray(a)
    for leaf in HEAD_LEAVES:
        if f"proto_head.{leaf}" in state:
            out[f"{HEAD_PATH_PREFIX}/{leaf}"] = state[f"proto_head.{leaf}"].detach().cpu().numpy()
    return out


def random_net(config: PerchConfig, seed: int = SEED) -> PerchNet:
    """Randomly initialised network (fixed seed; the global RNG is left untouched), in eval mode.

    BatchNorm statistics are calibrated on synthetic signals so that different inputs give different
    embeddings.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PerchNet(config)
        samples = int(round(config.sample_rate * config.window_s))
        calibrate_batchnorm(net, calibration_audio(samples, seed))
    return net


def read_perch_weights(
    path: str | Path, config: PerchConfig | None = None
) -> tuple[PerchConfig, dict[str, torch.Tensor]]:
    """Read any supported Perch weight container into (config, our state_dict); not yet loaded."""
    p = Path(path).expanduser()
    if is_checkpoint(p):
        cfg, state = load_checkpoint(p)
        return PerchConfig.from_dict(cfg), state
    config = config or PerchConfig()
    if p.suffix == ".onnx":
        from embedder.models.perch_onnx import read_onnx  # needs the optional onnx package

        return read_onnx(p, config)
    tensors = read_tensors(p)
    if any(TF_LEAF_RE.match(k) for k in tensors):
        tensors = bundle_to_flax(tensors, config)
    return flax_to_state_dict(tensors, config, str(p))


def import_perch(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Importer for :func:`embedder.weights.import_weights`: validated (config dict, state_dict)."""
    config, state = read_perch_weights(path)
    load_strict(PerchNet(config), state, str(path))
    return config.to_dict(), state


# ------------------------------------------------------------------------------------- embedder
class PerchEmbedder(TorchEmbedder):
    """Perch-2.0-style embedder; see :func:`load`.

    Attributes
    ----------
    model : PerchNet
        The network (frontend included), on ``device``, in eval mode.
    config : PerchConfig
    class_names : list[str] or None
        Names for ``logits`` columns when a labels file was given.
    """

    name = "perch"
    sample_rate = 32_000
    window_s = 5.0
    dim = EMBED_DIM

    def __init__(
        self,
        model: PerchNet,
        weights: str | None,
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str | None = None,
        class_names: list[str] | None = None,
        backend: str = "torch",
    ) -> None:
        self.precision = check_run_options(device, batch_size, precision)
        self.model, self.config, self.weights = model, model.config, weights
        self.device, self.batch_size = device, int(batch_size)
        self.class_names = class_names
        self.backend = backend

    def config_dict(self) -> dict:
        return {
            **super().config_dict(),
            "config": self.config.to_dict(),
            "precision": self.precision,
            "backend": self.backend,
        }

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(n, 160000) raw audio at 32 kHz -> (n, 1536) float32 mean-pooled embeddings."""
        return self.run(self.model, batch, (self.dim,))

    def embed_spatial(self, batch: np.ndarray) -> np.ndarray:
        """(n, 160000) -> (n, 16, 4, 1536) float32 spatial embeddings (time, freq, channel)."""
        tail = (16, 4, self.dim)  # 500x128 log-mel downsampled 32x (spec)
        return self.run(self.model.spatial, batch, tail)

    def frontend(self, batch: np.ndarray) -> np.ndarray:
        """(n, 160000) -> (n, 500, 128) float32 log-mel, after per-window normalisation."""
        return self.run(self.model.frontend, batch, (500, 128))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(n, 160000) -> (n, C) prototype-head logits; needs weights that carry the head."""
        self._check_head()
        return self.run(self.model.logits, batch, (self.config.n_classes,))

    @property
    def n_logits(self) -> int:
        return self.config.n_classes if self.model.proto_head is not None else 0

    def embed_with_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 160000) -> embeddings (n, 1536) and logits (n, C) from one pass of the network."""
        self._check_head()
        both = self.run(self.model.pooled_and_logits, batch, (self.dim + self.config.n_classes,))
        return both[:, : self.dim], both[:, self.dim :]

    def _check_head(self) -> None:
        if self.model.proto_head is None:
            raise RuntimeError("perch: these weights carry no classification head (no logits)")


def _describe(path: Path) -> str:
    return f"{path.resolve()} (sha256 {sha256_file(path)[:16]})"


def choose_backend(backend: str, device: torch.device, precision: str, options: dict) -> str:
    """Resolve the ``backend`` load option to ``"torch"`` or ``"onnxruntime"``.

    ``"auto"`` takes onnxruntime (the fastest CPU path, benchmarks/RESULTS.md) for
    fp32 on the CPU when it is installed and no torch-only option (:data:`TORCH_ONLY_OPTIONS`)
    was given, torch otherwise. An explicit choice that cannot run is a one-line ValueError.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    torch_only = [k for k in TORCH_ONLY_OPTIONS if k in options]
    if backend == "auto":
        fits = device.type == "cpu" and precision == "fp32" and not torch_only
        return "onnxruntime" if fits and ort_backend.available() else "torch"
    if backend == "onnxruntime":
        if not ort_backend.available():
            raise ValueError("backend onnxruntime: pip install onnxruntime onnx (not installed)")
        if device.type != "cpu":
            raise ValueError(f"backend onnxruntime runs on the CPU, not {device.type}")
        if precision != "fp32":
            raise ValueError(f"backend onnxruntime runs fp32, not {precision}")
        if torch_only:
            raise ValueError(f"{', '.join(torch_only)}: options of backend torch, not onnxruntime")
    return backend


def use_onnxruntime(net: PerchNet) -> None:
    """Replace the backbone by its ONNX export run in onnxruntime (exported once, cached)."""
    samples = int(round(net.config.sample_rate * net.config.window_s))
    with torch.no_grad():
        example = net.frontend(torch.zeros(2, samples))[:, None]  # (2, 1, T, F)
    path = ort_backend.cached_export(net.backbone, example, "perch")
    net.backbone = ort_backend.OrtModule(path, torch.get_num_threads())


def load(weights: str | None = None, device: str = "auto", **options) -> PerchEmbedder:
    """Build the ``perch`` embedder.

    Parameters
    ----------
    weights : str or None
        Our checkpoint (``.pt``), Flax-path ``.npz`` / ``.safetensors``, a SavedModel folder, or
        ``perch_v2.onnx`` (read by topology). ``None``: seeded random weights (``.weights`` None).
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ...
    batch_size : int, default 16
    precision : {"fp32", "bf16", "fp16"}, optional
        Default bf16 autocast on CUDA, fp32 elsewhere; see
        :func:`embedder.runtime.cpu_bf16_problem`.
    backend : {"auto", "torch", "onnxruntime"}, default "auto"
        See :func:`choose_backend`; onnxruntime runs the backbone's cached ONNX export.
    labels : path, optional
        Class names of the prototype head, one per line.
    fuse_bn : bool, default True
        Fold BatchNorm into the convolutions.
    channels_last, compile, micro_batch, cpu_workers
        Torch backend only: memory layout (default True); ``torch.compile`` the backbone;
        ``(windows, blocks)`` run in slices for cache locality (``0`` off; default ``(2, 8)`` on
        a CPU for fp32 or with ``cpu_workers=1``); threads each batch is split across on a CPU
        (default ``torch.get_num_threads()``, 1 off, not with ``compile``).
    **options
        The run options above, and any :class:`PerchConfig` field (e.g. ``logit_rescale=True``).
    """
    run_opts = {k: options.pop(k) for k in LOAD_OPTIONS if k in options}
    overrides = dict(options)
    try:
        PerchConfig.from_dict(overrides)
    except ValueError as exc:
        raise TypeError(f"perch.load: {exc}; run options are {', '.join(LOAD_OPTIONS)}") from None
    dev = resolve_device(device)
    # every option is checked before the network is built: a bad one costs nothing
    batch_size = run_opts.get("batch_size", DEFAULT_BATCH_SIZE)
    precision = check_run_options(dev, batch_size, run_opts.get("precision"))
    backend = choose_backend(run_opts.pop("backend", "auto"), dev, precision, run_opts)
    split = run_opts.get("cpu_workers", 1) != 1
    if split and (run_opts.get("compile", False) or dev.type != "cpu"):
        raise ValueError("perch: cpu_workers needs device cpu and no compile")
    net, description = _read_net(weights, overrides)
    if run_opts.get("fuse_bn", True):
        net.backbone.fuse()
    if backend == "onnxruntime":
        use_onnxruntime(net)
        net.frontend.micro_batch = CPU_MICRO_BATCH[0]
    else:
        _prepare_torch(net, dev, precision, run_opts)
    return PerchEmbedder(
        net,
        description,
        dev,
        batch_size=batch_size,
        precision=precision,
        class_names=_class_names(run_opts.get("labels"), net.config),
        backend=backend,
    )


def _read_net(weights: str | None, overrides: dict) -> tuple[PerchNet, str | None]:
    """The network in eval mode (read from ``weights``, or seeded-random), and how to name them."""
    if weights is None:
        net, description = random_net(PerchConfig(**overrides)), None
    else:
        path = Path(weights).expanduser()
        base_config, state = read_perch_weights(path, PerchConfig(**overrides))
        net = PerchNet(PerchConfig.from_dict({**base_config.to_dict(), **overrides}))
        load_strict(net, state, str(path))
        description = _describe(path)
    return net.eval(), description


def _prepare_torch(net: PerchNet, dev: torch.device, precision: str, run_opts: dict) -> None:
    """Place the network for the torch backend: memory layout, weight dtype, CPU threads,
    micro-batches and compilation."""
    compile_ = run_opts.get("compile", False)
    net.to(dev)
    if run_opts.get("channels_last", True):
        net.to(memory_format=torch.channels_last)
    if dev.type == "cpu" and precision == "bf16" and not compile_:
        # Weights stored in bf16 once, instead of autocast re-casting them on every call;
        # the frontend keeps float32 buffers (it runs with autocast off).
        net.backbone.to(torch.bfloat16)
    if dev.type == "cpu" and not compile_:
        net.cpu_workers = int(run_opts.get("cpu_workers", torch.get_num_threads()))
    # Micro-batches pay for fp32 only: bf16 activations are half the size, and with the batch
    # split across threads its slices already fit in cache.
    fp32_cpu = dev.type == "cpu" and precision == "fp32"
    default_micro = CPU_MICRO_BATCH if fp32_cpu or net.cpu_workers == 1 else 0
    micro = run_opts.get("micro_batch", default_micro)
    if isinstance(micro, int):  # a slice size alone: slice the default number of blocks
        micro = (micro, CPU_MICRO_BATCH[1])
    net.backbone.set_micro_batch(*micro)
    net.frontend.micro_batch = micro[0]
    if compile_:
        # Freezing lets inductor constant-fold weights and fuse conv + activation on CPU.
        net.backbone = torch.compile(net.backbone, options={"freezing": True})


def _class_names(labels: str | None, config: PerchConfig) -> list[str] | None:
    if not labels:
        return None
    if config.n_classes == 0:
        raise ValueError("perch: a labels file was given but the weights carry no head")
    return read_labels(labels, config.n_classes)
