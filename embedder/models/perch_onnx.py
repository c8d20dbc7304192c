"""Read a Perch 2.0 ONNX graph (e.g. Hugging Face ``justinchuby/Perch-onnx``) into our state_dict.

Tensor names in a converted graph say nothing reliable (exporters rename, deduplicate and share
constants), so weights are matched by topology: every node that carries a constant weight
(``Conv``, ``Gemm``, ``MatMul``), in graph order from the first 2-D convolution over a one-channel
image (the stem), is paired with the layer :func:`layer_plan` expects there, and its op type,
weight shape, groups and strides are checked. The first node that differs is named in the error.

The released ONNX folds each BatchNorm into its convolution (weight and bias). Such a layer is
stored as the conv weight plus an identity BatchNorm (mean 0, variance 1, scale ``sqrt(1 + eps)``,
bias = the conv's bias), so that :meth:`ConvBN.fuse` gives back the file's weight and bias
unchanged and the unfused module computes the same function. A graph that keeps explicit
``BatchNormalization`` nodes loads them as they are.

The graph's own frontend is not used (ours is), but a mel matrix it carries as a constant is
compared with ours: a difference above :data:`MEL_TOLERANCE` is refused.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedder.models.perch_frontend import mel_matrix
from embedder.models.perch_net import PerchConfig, PerchNet
from embedder.weights import WeightsError, check_state_dict

MEL_TOLERANCE = 1e-4  # max |Δ| between the graph's mel matrix and ours
MEL_SHAPE = (513, 128)  # FFT bins x mel bands
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
PASS_THROUGH_OPS = ("Identity", "Cast")  # constants reached through these are still constants


@dataclass(frozen=True)
class PlannedLayer:
    """One weight-carrying layer of our network, in forward order.

    Attributes
    ----------
    key : str
        State-dict prefix, e.g. ``backbone.blocks.3.depthwise`` or ``backbone.blocks.3.se.reduce``.
    kind : str
        ``"conv"`` (conv + BatchNorm) or ``"dense"`` (Linear with bias).
    shape : tuple[int, ...]
        Weight shape in PyTorch layout: OIHW for a conv, (out, in) for a dense layer.
    groups : int
    stride : int
    """

    key: str
    kind: str
    shape: tuple[int, ...]
    groups: int = 1
    stride: int = 1


@dataclass
class GraphLayer:
    """A node of the file that carries a constant weight, with what belongs to it."""

    node: str
    op: str
    weight: np.ndarray  # PyTorch layout (OIHW, or (out, in))
    bias: np.ndarray | None
    batchnorm: (
        tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None
    )  # s, b, m, v, eps
    groups: int
    stride: int

    def describe(self) -> str:
        extra = f", groups {self.groups}, stride {self.stride}" if self.op == "Conv" else ""
        return f"node {self.node!r} ({self.op}, weight {tuple(self.weight.shape)}{extra})"


def layer_plan(config: PerchConfig) -> list[PlannedLayer]:
    """Our network's weight-carrying layers in forward (= any topological) order."""
    stem = PlannedLayer("backbone.stem", "conv", (config.stem_channels, 1, 3, 3), stride=2)
    plan = [stem]
    for i, (in_ch, out_ch, kernel, stride, expand) in enumerate(config.block_specs()):
        key, mid = f"backbone.blocks.{i}", in_ch * expand
        reduced = max(1, in_ch // 4)
        if expand != 1:
            plan.append(PlannedLayer(f"{key}.expand", "conv", (mid, in_ch, 1, 1)))
        plan += [
            PlannedLayer(f"{key}.depthwise", "conv", (mid, 1, kernel, kernel), mid, stride),
            PlannedLayer(f"{key}.se.reduce", "dense", (reduced, mid)),
            PlannedLayer(f"{key}.se.expand", "dense", (mid, reduced)),
            PlannedLayer(f"{key}.project", "conv", (out_ch, mid, 1, 1)),
        ]
    last = config.block_specs()[-1][1]
    plan.append(PlannedLayer("backbone.head", "conv", (config.head_channels, last, 1, 1)))
    return plan


# ------------------------------------------------------------------------------------ graph access
class _Graph:
    """Constants, producers and consumers of an ONNX graph, through the ``onnx`` package."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.nodes = list(model.graph.node)
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer
        }
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.consts[node.output[0]] = numpy_helper.to_array(attr.t)
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.producer = {out: node for node in self.nodes for out in node.output}

    def const(self, name: str) -> np.ndarray | None:
        """The constant behind ``name`` (through Identity / Cast nodes), or None."""
        for _ in range(16):
            if name in self.consts:
                return self.consts[name]
            node = self.producer.get(name)
            if node is None or node.op_type not in PASS_THROUGH_OPS:
                return None
            name = node.input[0]
        return None

    def float_const(self, name: str) -> np.ndarray | None:
        value = self.const(name)
        if value is None or value.dtype.kind != "f":
            return None
        return value.astype(np.float32)

    def only_consumer(self, node):
        users = self.consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 else None


def _attr(node, name: str, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _bias_after(graph: _Graph, node, size: int) -> np.ndarray | None:
    """A constant added right after ``node`` (an exporter that keeps the bias apart)."""
    user = graph.only_consumer(node)
    if user is None or user.op_type != "Add":
        return None
    for name in user.input:
        value = graph.float_const(name)
        if value is not None and value.size == size and max(value.shape, default=1) == size:
            return value.reshape(size)
    return None


def _conv_layer(graph: _Graph, node, weight: np.ndarray) -> GraphLayer:
    out_ch = weight.shape[0]
    bias = graph.float_const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    bn = None
    user = graph.only_consumer(node)
    if bias is None and user is not None and user.op_type == "BatchNormalization":
        parts = [graph.float_const(n) for n in user.input[1:5]]
        if all(p is not None for p in parts):
            bn = (*parts, float(_attr(user, "epsilon", 1e-5)))
    if bias is None and bn is None:
        bias = _bias_after(graph, node, out_ch)
    strides = tuple(_attr(node, "strides", [1, 1]))
    layer = GraphLayer(
        node.name or node.output[0],
        "Conv",
        weight,
        bias,
        bn,
        int(_attr(node, "group", 1)),
        strides[0] if len(set(strides)) == 1 else -1,  # -1: unequal strides never match
    )
    return layer


def _dense_layer(graph: _Graph, node) -> GraphLayer | None:
    name = node.name or node.output[0]
    if node.op_type == "Gemm":
        b = graph.float_const(node.input[1])
        if b is None or b.ndim != 2:
            return None
        weight = b if _attr(node, "transB", 0) else b.T  # -> (out, in)
        bias = graph.float_const(node.input[2]) if len(node.input) > 2 else None
        return GraphLayer(name, "Gemm", weight, bias, None, 1, 1)
    b = graph.float_const(node.input[1])  # MatMul: x @ W with W (in, out)
    if b is None or b.ndim != 2:
        return None
    bias = _bias_after(graph, node, b.shape[1])
    return GraphLayer(name, "MatMul", b.T, bias, None, 1, 1)


def graph_layers(graph: _Graph) -> tuple[list[GraphLayer], list[int]]:
    """Weight-carrying nodes from the stem on, and each one's index in the node list."""
    start = None
    for i, node in enumerate(graph.nodes):
        if node.op_type == "Conv":
            w = graph.float_const(node.input[1])
            if w is not None and w.ndim == 4 and w.shape[1] == 1 and _attr(node, "group", 1) == 1:
                start = i
                break
    if start is None:
        raise WeightsError("no 2-D convolution over a one-channel image (no stem): not Perch")
    layers, where = [], []
    for i, node in enumerate(graph.nodes[start:], start):
        if node.op_type not in WEIGHT_OPS:
            continue
        weight = graph.float_const(node.input[1]) if len(node.input) > 1 else None
        if weight is None:
            continue  # an activation x activation product (e.g. in the head)
        if node.op_type == "Conv":
            layer = _conv_layer(graph, node, weight)
        else:
            layer = _dense_layer(graph, node)
            if layer is None:
                continue
        layers.append(layer)
        where.append(i)
    return layers, where


# ------------------------------------------------------------------------------------- the checks
def _matches(planned: PlannedLayer, layer: GraphLayer) -> bool:
    shape = tuple(layer.weight.shape)
    if planned.kind == "conv":
        return (
            layer.op == "Conv"
            and shape == planned.shape
            and layer.groups == planned.groups
            and layer.stride == planned.stride
        )
    if layer.op == "Conv":  # a dense layer exported as a 1x1 conv
        return shape == (*planned.shape, 1, 1) and layer.groups == 1 and layer.bias is not None
    return shape == planned.shape and layer.bias is not None


def _expected(planned: PlannedLayer) -> str:
    if planned.kind == "conv":
        return (
            f"a Conv with weight {planned.shape}, groups {planned.groups}, "
            f"stride {planned.stride} for {planned.key}"
        )
    return f"a dense layer (Gemm / MatMul + Add) with weight {planned.shape} for {planned.key}"


def check_mel(graph: _Graph, source: str) -> str | None:
    """Compare a (513, 128) constant of the graph with our mel matrix; return its name or None."""
    ours = mel_matrix()
    for name, value in graph.consts.items():
        if value.dtype.kind != "f" or value.size != ours.size:
            continue
        squeezed = value.reshape([d for d in value.shape if d != 1])
        if squeezed.shape == MEL_SHAPE[::-1]:
            squeezed = squeezed.T
        if squeezed.shape != MEL_SHAPE:
            continue
        delta = float(np.max(np.abs(squeezed.astype(np.float64) - ours)))
        if delta > MEL_TOLERANCE:
            raise WeightsError(
                f"{source}: the graph's mel matrix (constant {name!r}) differs from Perch 2.0's "
                f"(HTK, 128 bands over 60-16000 Hz at 32 kHz) by max |Δ| = {delta:.3g} > "
                f"{MEL_TOLERANCE:g}: a different frontend; refusing these weights"
            )
        return name
    return None


def _find_head(graph: _Graph, after: int, dim: int) -> dict[str, np.ndarray]:
    """Prototype head constants used after the backbone: (C, D, P), (C, P), (C,) in any axis order."""
    seen, floats = set(), []
    for node in graph.nodes[after + 1 :]:
        for name in node.input:
            value = graph.float_const(name)
            if value is not None and value.size > 1 and name not in seen:
                seen.add(name)
                floats.append((name, value))
    protos = [(n, v) for n, v in floats if v.ndim == 3 and dim in v.shape]
    if not protos:
        if any(dim in v.shape for _, v in floats):
            warnings.warn(
                "ONNX: tensors after the backbone look like a classification head in a layout "
                "not recognised here; the embedding model loads without it",
                stacklevel=3,
            )
        return {}
    if len(protos) != 1:
        raise WeightsError(f"prototype head: ambiguous ({', '.join(n for n, _ in protos)})")
    name, p = protos[0]
    d_axis = p.shape.index(dim)
    # classes before prototypes, as in the Flax parameter (C, D, P), whatever the exporter
    # did with the feature axis
    c_axis, p_axis = (a for a in range(3) if a != d_axis)
    prototypes = p.transpose(c_axis, d_axis, p_axis)
    n_classes, n_protos = prototypes.shape[0], prototypes.shape[2]
    head = {"prototypes": prototypes}
    for leaf, shapes in (
        ("protop_kernel", [(n_classes, n_protos), (n_protos, n_classes)]),
        ("bias", [(n_classes,)]),
    ):
        found = [(n, v) for n, v in floats if n != name and v.shape in shapes]
        if len(found) != 1:
            what = "missing" if not found else f"ambiguous ({', '.join(n for n, _ in found)})"
            raise WeightsError(f"prototype head: tensor {leaf} {what} (beside {name!r})")
        value = found[0][1]
        head[leaf] = value.T if value.shape != shapes[0] else value
    return head


# ------------------------------------------------------------------------------------------- read
def _identity_bn(prefix: str, bias: np.ndarray | None, out_ch: int, eps: float) -> dict:
    one = torch.ones(out_ch)
    return {
        f"{prefix}.bn.weight": torch.sqrt(one + eps),  # fuse() divides by this same value: 1.0
        f"{prefix}.bn.bias": torch.from_numpy(bias.copy()) if bias is not None else 0 * one,
        f"{prefix}.bn.running_mean": torch.zeros(out_ch),
        f"{prefix}.bn.running_var": one,
        f"{prefix}.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
    }


def _layer_state(planned: PlannedLayer, layer: GraphLayer, eps: float) -> dict:
    key = planned.key
    weight = torch.from_numpy(np.ascontiguousarray(layer.weight, dtype=np.float32))
    if planned.kind == "dense":
        return {
            f"{key}.weight": weight.reshape(planned.shape),
            f"{key}.bias": torch.from_numpy(layer.bias.copy()),
        }
    state = {f"{key}.conv.weight": weight}
    if layer.batchnorm is None:
        state.update(_identity_bn(key, layer.bias, planned.shape[0], eps))
        return state
    scale, bias, mean, var, file_eps = (np.asarray(a, np.float32) for a in layer.batchnorm)
    state.update(
        {
            f"{key}.bn.weight": torch.from_numpy(scale.copy()),
            f"{key}.bn.bias": torch.from_numpy(bias.copy()),
            f"{key}.bn.running_mean": torch.from_numpy(mean.copy()),
            # var + eps is what the layer divides by: keep it when the file's eps differs
            f"{key}.bn.running_var": torch.from_numpy(var + np.float32(file_eps - eps)),
            f"{key}.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
        }
    )
    return state


def read_onnx(
    path: str | Path, config: PerchConfig | None = None
) -> tuple[PerchConfig, dict[str, torch.Tensor]]:
    """Read a Perch 2.0 ``.onnx`` file into (config, our unfused state_dict).

    Parameters
    ----------
    path : str or Path
        The ONNX file (weights inside it or in external-data files beside it).
    config : PerchConfig, optional
        Architecture to match; default the released one. ``n_classes`` / ``n_prototypes`` are set
        from the prototype head when the file carries one (else ``n_classes`` = 0).

    Raises
    ------
    WeightsError
        Unreadable file; a topology that differs from ours (naming the first node that does);
        a mel matrix that is not ours.
    """
    p = Path(path)
    try:
        import onnx
    except ImportError:
        raise WeightsError(
            f"{p}: reading an ONNX file needs the onnx package: pip install 'chorus[onnx]'"
        ) from None
    try:
        model = onnx.load(str(p))
    except Exception as err:  # protobuf decode and external-data errors have no common base
        raise WeightsError(f"{p}: not a readable ONNX file ({type(err).__name__}: {err})") from None
    graph = _Graph(model)
    check_mel(graph, str(p))
    config = PerchConfig.from_dict((config or PerchConfig()).to_dict())
    plan = layer_plan(config)
    try:
        layers, where = graph_layers(graph)
    except WeightsError as err:
        raise WeightsError(f"{p}: {err}") from None
    state: dict[str, torch.Tensor] = {}
    for i, planned in enumerate(plan):
        if i >= len(layers):
            last = layers[-1].describe() if layers else "the start"
            raise WeightsError(
                f"{p}: topology mismatch: the graph ends after {last}; expected {_expected(planned)}"
            )
        if not _matches(planned, layers[i]):
            raise WeightsError(
                f"{p}: topology mismatch at {layers[i].describe()}: expected {_expected(planned)}"
            )
        state.update(_layer_state(planned, layers[i], config.bn_eps))
    head = _find_head(graph, where[len(plan) - 1], config.head_channels)
    if head:
        config.n_classes = int(head["prototypes"].shape[0])
        config.n_prototypes = int(head["prototypes"].shape[2])
        for leaf, value in head.items():
            state[f"proto_head.{leaf}"] = torch.from_numpy(np.ascontiguousarray(value, np.float32))
    else:
        config.n_classes = 0
    expected = {k: tuple(v.shape) for k, v in PerchNet(config).state_dict().items()}
    check_state_dict(expected, {k: tuple(v.shape) for k, v in state.items()}, str(p))
    return config, state
