"""The Perch-2.0-style network: EfficientNet-B3 on a log-mel image, plus the optional prototype head.

Layout follows ``specs/perch2.md``: VALID stem, TF-"SAME" padding for stride-2 depthwise convs,
squeeze-excitation, BatchNorm eps 1e-5, a 1536-channel head whose (16, 4) map is the spatial embedding.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from embedder.models.perch_frontend import LOG_FLOOR, LogMelFrontend

EMBED_DIM = 1536  # channels of the head = embedding size
STEM_CHANNELS = 40
N_PROTOTYPES = 4  # prototypes per class in the released head
PROTO_EPS = 1e-5  # eps of the unit normalisation in the prototype head
BN_EPS = 1e-5
BN_MOMENTUM = 0.01  # PyTorch convention (= 1 - Flax momentum 0.99)
SE_RATIO = 4  # squeeze units = max(1, block input channels // SE_RATIO)
DROP_PATH_RATE = 0.2  # stochastic depth, training only
LOGIT_SCALE, LOGIT_SHIFT = 0.97, -10.0  # released tooling's rescale of the prototype logits
# EfficientNet-B3 stages: (blocks, out channels, kernel, stride, expand ratio)
B3_STAGES = (
    (2, 24, 3, 1, 1),
    (3, 32, 3, 2, 6),
    (3, 48, 5, 2, 6),
    (5, 96, 3, 2, 6),
    (5, 136, 5, 1, 6),
    (6, 232, 5, 2, 6),
    (2, 384, 3, 1, 6),
)
ACTIVATIONS = ("swish", "relu")
_POOLS: dict[int, ThreadPoolExecutor] = {}  # shared worker threads, by size (see run_split)
_THREADS_LOCK = threading.Lock()  # the intra-op thread count is process-wide in torch


@dataclass
class PerchConfig:
    """Every knob of the Perch model; defaults reproduce the released checkpoint's conventions."""

    sample_rate: int = 32_000  # Hz
    window_s: float = 5.0  # s
    window_type: str = "symmetric"  # Hann window: "symmetric" (released) | "periodic"
    padding_mode: str = "center160"  # "center160" (released) | "reference320"
    log_floor: float = LOG_FLOOR  # 1e-5 (released) | 1e-2 (reference code)
    normalize: bool = True  # per-window mean removal and peak 0.25
    activation: str = "swish"  # blocks and SE: "swish" (released) | "relu"
    stem_channels: int = STEM_CHANNELS
    head_channels: int = EMBED_DIM
    stages: list = field(default_factory=lambda: [list(s) for s in B3_STAGES])
    bn_eps: float = BN_EPS
    bn_momentum: float = BN_MOMENTUM
    drop_path_rate: float = DROP_PATH_RATE
    n_classes: int = 0  # prototype head classes; 0 = no head
    n_prototypes: int = N_PROTOTYPES
    logit_rescale: bool = False  # apply the released 0.97 x - 10 to logits

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        self.stages = [[int(v) for v in s] for s in self.stages]

    def to_dict(self) -> dict:
        """JSON-serialisable form (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PerchConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error so typos do not pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown Perch config field(s): {', '.join(unknown)}")
        return cls(**d)

    def block_specs(self) -> list[tuple[int, int, int, int, int]]:
        """One (in_ch, out_ch, kernel, stride, expand) per MBConv block, in order."""
        specs, in_ch = [], self.stem_channels
        for n_blocks, out_ch, kernel, stride, expand in self.stages:
            for i in range(n_blocks):
                specs.append((in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
        return specs


def make_activation(name: str) -> nn.Module:
    # In place: the pre-activation tensor is never reused, and bf16 CPU runs are memory-bound.
    return nn.SiLU(inplace=True) if name == "swish" else nn.ReLU(inplace=True)


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one spatial dim of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional activation, with VALID / symmetric / TF-SAME padding.

    ``fuse()`` folds the BatchNorm into the conv for inference.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        padding: str = "same",
        activation: str | None = "swish",
        bn_eps: float = BN_EPS,
        bn_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        static_pad = kernel // 2 if padding == "same" and stride == 1 else 0
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, static_pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = make_activation(activation) if activation else nn.Identity()

    def pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Apply TF-SAME padding for strided convs: (input, symmetric conv padding (h, w)).

        Symmetric cases (odd sizes) go to the conv's own padding, which costs nothing; only the
        asymmetric ones need an explicit ``F.pad`` copy.
        """
        if not (self.padding == "same" and self.stride > 1):
            return x, self.conv.padding
        top, bottom = tf_same_pad(x.shape[-2], self.kernel, self.stride)
        left, right = tf_same_pad(x.shape[-1], self.kernel, self.stride)
        if top == bottom and left == right:
            return x, (top, left)
        return F.pad(x, (left, right, top, bottom)), (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = self.pad_input(x)
        y = F.conv2d(
            x, self.conv.weight, self.conv.bias, self.conv.stride, padding, 1, self.conv.groups
        )
        return self.act(self.bn(y))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BatchNorm (running statistics) into the conv weight and a new bias."""
        if isinstance(self.bn, nn.Identity):
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
        fused = torch.nn.utils.skip_init(  # no random init: leaves the global RNG untouched
            nn.Conv2d,
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
            device=conv.weight.device,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, nn.Identity()


class SqueezeExcite(nn.Module):
    """Global mean -> dense reduce -> act -> dense expand -> sigmoid -> channel gate.

    Without autograd (inference) the input is gated in place.
    """

    def __init__(self, channels: int, reduced: int, activation: str) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, reduced)
        self.expand = nn.Linear(reduced, channels)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16:
            # faster than adaptive_avg_pool2d / mean for bf16 channels_last on CPU (those
            # upcast through a copy); not used for fp32, where the map-sized kernel would make
            # the ONNX export shape-dependent for no gain.
            s = F.avg_pool2d(x, x.shape[-2:]).flatten(1)  # (B, C)
        else:
            s = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        return self.apply_gate(x, self.gate(s))

    def gate(self, mean: torch.Tensor) -> torch.Tensor:
        """(B, C) channel means -> (B, C) gates in (0, 1)."""
        return torch.sigmoid(self.expand(self.act(self.reduce(mean))))

    def apply_gate(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``x`` (B, C, H, W) by its gate ``s`` (B, C)."""
        if torch.is_grad_enabled():
            return x * s[:, :, None, None]
        # x is the block's own depthwise output, used nowhere else: gate it in place.
        return x.mul_(s[:, :, None, None].to(x.dtype))


class MBConv(nn.Module):
    """Inverted residual block: [expand 1x1] -> depthwise kxk -> SE -> project 1x1 (+ residual)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand: int,
        activation: str = "swish",
        bn_eps: float = BN_EPS,
        bn_momentum: float = BN_MOMENTUM,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        mid = in_ch * expand
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.expand = (
            ConvBN(in_ch, mid, 1, activation=activation, **bn) if expand != 1 else nn.Identity()
        )
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid, activation=activation, **bn)
        self.se = SqueezeExcite(mid, max(1, in_ch // SE_RATIO), activation)
        self.project = ConvBN(mid, out_ch, 1, activation=None, **bn)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.se(self.depthwise(self.expand(x)))
        y = self.project(h)
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(y.shape[0], 1, 1, 1, device=y.device) < keep  # (B, 1, 1, 1)
            y = y * mask / keep
        if torch.is_grad_enabled():
            return x + y
        return y.add_(x)  # y is the project conv's own output: no new activation-sized tensor


class EfficientNetB3(nn.Module):
    """Log-mel image (B, 1, T, F) -> head feature map (B, 1536, T/32, F/32)."""

    def __init__(self, config: PerchConfig) -> None:
        super().__init__()
        c, bn = config, {"bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}
        self.stem = ConvBN(1, c.stem_channels, 3, 2, padding="valid", activation="swish", **bn)
        specs = c.block_specs()
        self.blocks = nn.Sequential(
            *[
                MBConv(*spec, c.activation, drop_path=c.drop_path_rate * i / len(specs), **bn)
                for i, spec in enumerate(specs)
            ]
        )
        self.head = ConvBN(specs[-1][1], c.head_channels, 1, activation="swish", **bn)
        # CPU cache blocking (see set_micro_batch): 0 = off.
        self.micro_batch, self.micro_blocks = 0, 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.stem.conv.weight.dtype)  # bf16 weights (CPU fast path) take bf16 input
        if self.micro_batch and len(x) > self.micro_batch:
            early = self.blocks[: self.micro_blocks]
            x = torch.cat([early(self.stem(part)) for part in x.split(self.micro_batch)])
            return self.head(self.blocks[self.micro_blocks :](x))
        return self.head(self.blocks(self.stem(x)))

    def set_micro_batch(self, size: int, blocks: int) -> None:
        """Run the stem and the first ``blocks`` blocks ``size`` windows at a time (0 = off).

        The high-resolution early layers of a batch of 8 produce ~70 MB fp32 activations that
        neither fit the CPU caches nor get reused by the allocator (glibc hands such blocks back
        to the OS, so every call page-faults them in again). Smaller slices fit; the low-resolution
        later layers keep the whole batch, where wider matrix products are more efficient.
        Every layer is per-window in inference, so the result does not change.
        """
        if size < 0 or not 0 <= blocks <= len(self.blocks):
            raise ValueError(f"bad micro-batch ({size}, {blocks})")
        self.micro_batch, self.micro_blocks = int(size), int(blocks)

    def fuse(self) -> None:
        """Fold every BatchNorm into its conv (inference only)."""
        for m in self.modules():
            if isinstance(m, ConvBN):
                m.fuse()


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, audio: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics from one pass over ``audio`` (B, n).

    For random initialisation only: with the default statistics (mean 0, var 1) activations shrink
    block after block until every window gets the same near-zero embedding.
    """
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
            m.train()
    net(audio)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = BN_MOMENTUM
    net.eval()


def calibration_audio(n_samples: int, seed: int = 0) -> torch.Tensor:
    """Four varied test signals (B=4, n): white noise, brown noise, a sine sweep, gated noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples, dtype=torch.float32) / n_samples  # (n,) 0..1
    white = torch.randn(n_samples, generator=g)
    brown = torch.cumsum(torch.randn(n_samples, generator=g), 0)
    sweep = torch.sin(2 * math.pi * (500 * t + 0.5 * 12_000 * t * t) * 5.0)
    gated = torch.randn(n_samples, generator=g) * (torch.sin(2 * math.pi * 7 * t) > 0.5)
    return torch.stack([white, brown - brown.mean(), sweep, gated])  # (4, n)


def run_split(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, workers: int
) -> torch.Tensor:
    """``fn(x)`` computed as ``workers`` slices of the batch in parallel threads (CPU inference).

    Each thread runs its slice with ``torch.get_num_threads() // workers`` intra-op threads
    (the process-wide setting is lowered for the duration of the call, then restored). On few
    cores this data parallelism beats intra-op parallelism: no thread barrier per operator (with
    ``OMP_WAIT_POLICY=PASSIVE`` each one is a sleep and a wake-up), and each core keeps its own
    slice in its cache. The caller's autocast and inference-mode
    state is thread-local, so it is re-entered in every worker.
    """
    parts = x.tensor_split(min(workers, len(x)))
    autocast = torch.is_autocast_enabled(x.device.type)
    dtype = torch.get_autocast_dtype(x.device.type)
    inference = torch.is_inference_mode_enabled()

    def one(part: torch.Tensor) -> torch.Tensor:
        with (
            torch.autocast(x.device.type, dtype=dtype, enabled=autocast),
            torch.inference_mode(inference),
            torch.no_grad(),
        ):
            return fn(part)

    with _THREADS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:  # one pool per size for the life of the process, not one per call
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, "perch-cpu")
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // workers))
        try:
            outs = list(pool.map(one, parts))
        finally:
            torch.set_num_threads(threads)
    return torch.cat(outs)


class PrototypeHead(nn.Module):
    """Released-style prototype classifier over the spatial embedding.

    Cosine similarity between every (t, f) position and each of P prototypes per class, max over
    positions, then a non-negative weighted sum over prototypes plus a bias.
    """

    def __init__(self, n_classes: int, dim: int = EMBED_DIM, n_prototypes: int = N_PROTOTYPES):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(n_classes, dim, n_prototypes) * 0.02)
        self.protop_kernel = nn.Parameter(torch.ones(n_classes, n_prototypes))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, spatial: torch.Tensor) -> torch.Tensor:
        """(B, T, F, D) spatial embedding -> (B, C) logits."""
        b, _, _, d = spatial.shape
        c, _, p = self.prototypes.shape
        x = F.normalize(spatial.reshape(b, -1, d), dim=-1, eps=PROTO_EPS)  # (B, T*F, D)
        protos = F.normalize(self.prototypes, dim=1, eps=PROTO_EPS)  # (C, D, P)
        sim = x @ protos.permute(1, 0, 2).reshape(d, c * p)  # (B, T*F, C*P)
        sim = sim.amax(dim=1).reshape(b, c, p)  # (B, C, P)
        return (sim * self.protop_kernel.clamp_min(0)).sum(-1) + self.bias  # (B, C)


class PerchNet(nn.Module):
    """Raw audio -> frontend -> EfficientNet-B3 -> spatial / pooled embedding (+ optional logits)."""

    def __init__(self, config: PerchConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = LogMelFrontend(
            config.window_type, config.padding_mode, config.log_floor, config.normalize
        )
        self.backbone = EfficientNetB3(config)
        self.proto_head = (
            PrototypeHead(config.n_classes, config.head_channels, config.n_prototypes)
            if config.n_classes > 0
            else None
        )
        # CPU inference: split each batch across this many threads (see run_split); 1 = off.
        self.cpu_workers = 1

    def spatial_from_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, F) log-mel -> (B, T/32, F/32, D) spatial embedding (time, freq, channel)."""
        x = logmel[:, None]  # (B, 1, T, F)
        return self.backbone(x).permute(0, 2, 3, 1)  # (B, 16, 4, 1536)

    def spatial(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n) raw audio -> (B, 16, 4, 1536)."""
        if self.cpu_workers > 1 and len(audio) > 1 and not torch.is_grad_enabled():
            return run_split(self._spatial, audio, self.cpu_workers)
        return self._spatial(audio)

    def _spatial(self, audio: torch.Tensor) -> torch.Tensor:
        return self.spatial_from_logmel(self.frontend(audio))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n) raw audio -> (B, 1536) pooled embedding."""
        return self.spatial(audio).float().mean(dim=(1, 2))

    def logits(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n) raw audio -> (B, C) prototype-head logits (float32)."""
        return self.head_logits(self.spatial(audio).float())

    def pooled_and_logits(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n) raw audio -> (B, D + C): pooled embedding and logits from one backbone pass."""
        spatial = self.spatial(audio).float()  # (B, 16, 4, D)
        return torch.cat([spatial.mean(dim=(1, 2)), self.head_logits(spatial)], dim=1)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        """(B, T, F, D) spatial embedding -> (B, C) float32 prototype-head logits."""
        if self.proto_head is None:
            raise RuntimeError("these Perch weights carry no classification head")
        with torch.autocast(device_type=spatial.device.type, enabled=False):
            out = self.proto_head(spatial)  # (B, C); cosines need full precision
        if self.config.logit_rescale:
            out = LOGIT_SCALE * out + LOGIT_SHIFT
        return out
