"""The BirdNET V2.4 network in plain PyTorch: 3 s at 48 kHz -> 1024-d embedding and 6,522 logits.

The released ``.tflite`` graph is the specification, op for op:

- each window is scaled to [-1, 1] by its own min and max;
- two STFT branches (frame 2048 / hop 278 and 1024 / 280, periodic Hann, no padding, 511 frames).
  The graph casts the complex spectrum to float, which keeps the *real part* (not the magnitude);
  a mel matrix maps it to 96 bands, which are squared, raised to a learned exponent and flipped
  so that high frequencies come first;
- a per-branch affine normalisation, a stride-2 stem (TF "SAME") with ReLU, max + average
  pooling over time, and 16 MBConv blocks with swish and squeeze-excitation; BatchNorm is already
  folded into the convolution biases in the file, so the blocks here have biases and no BatchNorm;
- an affine + ReLU, a 3x3 VALID convolution to 1024 channels with ReLU, and the mean over
  frequency and time: the embedding BirdNET-Analyzer exports. A dense layer gives the logits.

Tensors are NCHW with H = mel band and W = time frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 1024
N_CLASSES = 6522
# MBConv stages: (blocks, expanded channels, output channels, squeeze-excitation channels; 0 = none)
V24_STAGES = ((3, 72, 36, 0), (4, 288, 72, 18), (5, 864, 108, 27), (4, 1536, 192, 48))


@dataclass
class BirdNetConfig:
    """Every size of the BirdNET V2.4 network; defaults are the released model's."""

    sample_rate: int = 48_000  # Hz
    window_s: float = 3.0  # s
    n_mels: int = 96
    frame_lengths: list = field(default_factory=lambda: [2048, 1024])  # samples, per branch
    hops: list = field(default_factory=lambda: [278, 280])  # samples, per branch
    fmin: list = field(default_factory=lambda: [0.0, 500.0])  # Hz; only for random init
    fmax: list = field(default_factory=lambda: [3000.0, 15000.0])  # Hz; only for random init
    norm_eps: float = 1e-6  # added to the peak in the [-1, 1] input scaling
    stem_channels: int = 24
    stem_kernel: list = field(default_factory=lambda: [4, 8])  # (mel, time)
    stages: list = field(default_factory=lambda: [list(s) for s in V24_STAGES])
    head_kernel: int = 3
    embed_dim: int = EMBED_DIM
    n_classes: int = N_CLASSES  # 0 = no classification head

    def __post_init__(self) -> None:
        self.stages = [[int(v) for v in s] for s in self.stages]
        if not len(self.frame_lengths) == len(self.hops) == len(self.fmin) == len(self.fmax):
            raise ValueError("frame_lengths, hops, fmin and fmax need one entry per branch")

    def to_dict(self) -> dict:
        """JSON-serialisable form (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BirdNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error so typos do not pass silently."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown BirdNET config field(s): {', '.join(unknown)}")
        return cls(**d)

    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.window_s))

    def n_frames(self, branch: int) -> int:
        return (self.window_samples - self.frame_lengths[branch]) // self.hops[branch] + 1

    def block_specs(self) -> list[tuple[int, int, int, int, int]]:
        """One (in_ch, expand_ch, out_ch, se_ch, stride) per MBConv block, in graph order."""
        specs, in_ch = [], self.stem_channels
        for n_blocks, expand_ch, out_ch, se_ch in self.stages:
            for i in range(n_blocks):
                specs.append((in_ch, expand_ch, out_ch, se_ch, 2 if i == 0 else 1))
                in_ch = out_ch
        return specs


def mel_matrix(n_mels: int, n_bins: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_bins) HTK-mel triangles as ``tf.signal.linear_to_mel_weight_matrix`` builds them
    (the DC bin gets no weight). Random-init models use it; a real file brings its own matrix."""

    def hz_to_mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    bins_mel = hz_to_mel(np.linspace(0.0, sample_rate / 2, n_bins))[1:]  # (n_bins - 1,)
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,) each
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_bins - 1, n_mels)
    return np.pad(weights, ((1, 0), (0, 0))).T.astype(np.float32)  # (n_mels, n_bins)


class MelBranch(nn.Module):
    """One spectrogram branch: (B, N) scaled audio -> (B, n_mels, T), high bands first."""

    def __init__(self, frame_length: int, hop: int, n_mels: int) -> None:
        super().__init__()
        self.frame_length, self.hop = frame_length, hop
        n = torch.arange(frame_length, dtype=torch.float64)
        hann = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / frame_length)  # periodic
        self.register_buffer("window", hann.float())
        self.register_buffer("mel", torch.zeros(n_mels, frame_length // 2 + 1))
        self.register_buffer("exponent", torch.tensor(0.25))

    def bands(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) scaled audio -> (B, T, n_mels) float32 mel sums of the spectrum's real part."""
        frames = x.unfold(1, self.frame_length, self.hop)  # (B, T, L)
        # The graph's RFFT2D runs in float64 and rounds its output to float32. Squared and raised
        # to a fractional power, near-silent bands amplify rounding, so the spectrum and the mel
        # sum stay in float64 here: only over the bins the mel matrix uses (1-127 of 1025 in the
        # first branch), which also makes the sum cheap.
        spec = torch.fft.rfft((frames * self.window).double()).real  # (B, T, L/2 + 1)
        used = self.mel.any(dim=0).nonzero()
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        return (spec[..., lo:hi] @ self.mel[:, lo:hi].double().T).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = self.bands(x)  # (B, T, n_mels)
        mel = (mel * mel).pow(self.exponent)
        return mel.flip(-1).transpose(1, 2)  # (B, n_mels, T)


class Frontend(nn.Module):
    """(B, N) raw audio -> (B, 2, n_mels, T): per-window [-1, 1] scaling, two mel branches.

    ``micro_batch`` windows at a time (0: all at once): on a CPU one window's float64 frames stay
    in cache, which makes the frontend several times faster than whole batches.
    """

    def __init__(self, config: BirdNetConfig) -> None:
        super().__init__()
        self.eps = config.norm_eps
        self.micro_batch = 0
        self.branches = nn.ModuleList(
            MelBranch(length, hop, config.n_mels)
            for length, hop in zip(config.frame_lengths, config.hops, strict=True)
        )

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N) float32, each window mapped onto [-1, 1] by its own min and max."""
        x = x.float()
        x = x - x.amin(dim=1, keepdim=True)
        x = x / (x.amax(dim=1, keepdim=True) + self.eps)
        return (x - 0.5) * 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 always: squaring and a fractional power of tiny band energies underflow in bf16
        with torch.autocast(x.device.type, enabled=False):
            x = self.scale(x)
            step = max(self.micro_batch or len(x), 1)
            parts = [
                torch.stack([branch(x[i : i + step]) for branch in self.branches], dim=1)
                for i in range(0, len(x), step)
            ]
            return torch.cat(parts) if len(parts) != 1 else parts[0]  # (B, 2, n_mels, T)


class Affine(nn.Module):
    """Per-channel scale and shift (an inference-time BatchNorm): (B, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding of (B, C, H, W) for a ``kernel`` at ``stride`` (extra at the end)."""
    pads = []
    for size, k in zip(
        reversed(x.shape[-2:]), reversed(kernel), strict=True
    ):  # F.pad wants W first
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Stem(nn.Module):
    """(B, 2, M, T) -> (B, C, M/2, T/4): SAME stride-2 conv + ReLU, [max, avg] pool over time,
    1x1 projection back to C channels."""

    def __init__(self, channels: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.conv = nn.Conv2d(2, channels, self.kernel, stride=2)
        self.proj = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(same_pad(x, self.kernel, 2)))
        pooled = [F.max_pool2d(x, (1, 2)), F.avg_pool2d(x, (1, 2))]
        return self.proj(torch.cat(pooled, dim=1))


class SqueezeExcite(nn.Module):
    """Channel gates from the spatial mean: (B, C, H, W) -> same."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    """Expand 1x1 + swish, depthwise 3x3 + swish, optional SE, project 1x1; residual at stride 1.

    The stride-2 depthwise conv pads one on every side (the graph pads explicitly, then VALID);
    at stride 1 that is also TF "SAME" for a 3x3 kernel.
    """

    def __init__(self, in_ch: int, expand_ch: int, out_ch: int, se_ch: int, stride: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(in_ch, expand_ch, 1)
        self.depthwise = nn.Conv2d(expand_ch, expand_ch, 3, stride, 1, groups=expand_ch)
        self.se = SqueezeExcite(expand_ch, se_ch) if se_ch else None
        self.project = nn.Conv2d(expand_ch, out_ch, 1)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.depthwise(F.silu(self.expand(x))))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class BirdNetNet(nn.Module):
    """Frontend, backbone and head; :meth:`forward` gives the (B, 1024) embedding."""

    def __init__(self, config: BirdNetConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = Frontend(config)
        self.spec_norm = Affine(len(config.frame_lengths))
        self.stem = Stem(config.stem_channels, tuple(config.stem_kernel))
        self.blocks = nn.Sequential(*(MBConv(*spec) for spec in config.block_specs()))
        last = config.block_specs()[-1][2]
        self.head_norm = Affine(last)
        self.head_conv = nn.Conv2d(last, config.embed_dim, config.head_kernel)
        self.classifier = (
            nn.Linear(config.embed_dim, config.n_classes) if config.n_classes else None
        )

    def backbone(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 2, M, T) spectrograms -> (B, embed_dim) pooled embedding."""
        x = self.blocks(self.stem(self.spec_norm(spec)))  # (B, 192, 3, 8) for 3 s
        x = F.relu(self.head_conv(F.relu(self.head_norm(x))))  # (B, 1024, 1, 6)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) raw audio -> (B, embed_dim)."""
        return self.backbone(self.frontend(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, n_classes) logits (BirdNET applies a sigmoid outside the graph)."""
        return self.classifier(self(x))

    def pooled_and_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, embed_dim + n_classes): embedding and logits from one pass."""
        emb = self(x)
        return torch.cat([emb, self.classifier(emb)], dim=1)


def random_net(config: BirdNetConfig, seed: int = 0) -> BirdNetNet:
    """Randomly initialised network (fixed seed; the global RNG is left untouched), eval mode.

    The frontend gets real mel matrices so that random vectors still follow the spectrum.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = BirdNetNet(config)
        # variance-preserving init, so that random vectors still differ between sounds (with
        # PyTorch's default init the activations shrink block by block to the biases)
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        net.spec_norm.weight.data.fill_(0.2)  # bands reach ~5-15; the released scales are similar
    for branch, lo, hi in zip(net.frontend.branches, config.fmin, config.fmax, strict=True):
        n_bins = branch.frame_length // 2 + 1
        mel = mel_matrix(config.n_mels, n_bins, config.sample_rate, lo, hi)
        branch.mel.copy_(torch.from_numpy(mel))
    return net.eval()
