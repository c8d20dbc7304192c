"""The animal2vec-style network (data2vec 2.0 lineage) in plain PyTorch: config, layers, model.

The architecture follows ``specs/animal2vec.md``: a SincNet band-pass bank and seven strided convolutions
turn 8 kHz audio into 200 frames/s of 512 channels; a projection, a convolutional relative positional
encoder and 8 + 16 post-LayerNorm transformer blocks with an ALiBi attention bias follow. A frame's
representation is the mean of the 16 main blocks' FFN outputs; a window's embedding is its time average.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 8_000  # Hz
WINDOW_S = 10.0  # s per embedded window
# Feature extractor layers (channels, kernel samples, stride samples); layer 0 is the sinc bank.
CONV_LAYERS = (
    ((127, 63, 1), (512, 10, 5)) + ((512, 3, 2),) * 3 + ((512, 3, 1),) + ((512, 2, 1),) * 2
)
SINC_MIN_LOW_HZ = 50.0  # Hz, lowest allowed low cut-off
# narrowest allowed band: None = the bank's frequency resolution, ceil(sample_rate / kernel), as
# animal2vec's SincConv sets it (127 Hz for the published 8 kHz, 63-tap bank)
SINC_MIN_BAND_HZ = None
MEL_BREAK_HZ = 700.0  # Hz, SincNet mel scale 2595 log10(1 + f / 700)
MEL_SCALE = 2595.0
WINDOW_A0 = 0.53836  # Hamming-type window a0 - a1 cos(2 pi m / L)
WINDOW_A1 = 0.46164
PSWISH_ALPHA = 2.0  # PSwish y = x * alpha * sigmoid(beta * x); alpha 2, beta 0 is the identity
PSWISH_BETA = 0.0
LN_EPS = 1e-5
INPUT_NORM_EPS = 1e-5  # per-segment waveform normalisation
RANDOM_SEED = 0  # weights=None builds a reproducible random model
DEFAULT_BATCH = {"cuda": 16, "mps": 4, "cpu": 2}  # windows per forward pass


@dataclass
class Animal2vecConfig:
    """Shape of an animal2vec model; the presets are :meth:`large` and :meth:`small`."""

    sample_rate: int = SAMPLE_RATE
    window_s: float = WINDOW_S
    conv_layers: tuple[tuple[int, int, int], ...] = CONV_LAYERS
    sinc_min_low_hz: float = SINC_MIN_LOW_HZ
    sinc_min_band_hz: float | None = SINC_MIN_BAND_HZ  # Hz; None: see SINC_MIN_BAND_HZ
    width: int = 1024
    prenet_depth: int = 8
    depth: int = 16
    heads: int = 16
    ffn_dim: int = 4096
    pos_conv_layers: int = 5
    pos_conv_kernel: int = 19
    pos_conv_groups: int = 16
    num_classes: int = 0  # > 0: a fine-tuned linear head giving per-frame logits
    extra: dict = field(default_factory=dict)  # provenance notes (e.g. the source checkpoint's cfg)

    def __post_init__(self) -> None:
        if self.sinc_min_band_hz is None:
            self.sinc_min_band_hz = float(math.ceil(self.sample_rate / self.conv_layers[0][1]))

    @classmethod
    def large(cls) -> Animal2vecConfig:
        """The published MeerKAT shape (≈ 313.9 M parameters)."""
        return cls()

    @classmethod
    def small(cls) -> Animal2vecConfig:
        """A CPU-sized model with the same feature extractor."""
        return cls(width=256, prenet_depth=2, depth=4, heads=4, ffn_dim=1024)

    @classmethod
    def from_dict(cls, d: dict) -> Animal2vecConfig:
        """Inverse of ``dataclasses.asdict`` (JSON turns tuples into lists)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown animal2vec config fields: {', '.join(unknown)}")
        d = dict(d)
        if "conv_layers" in d:
            d["conv_layers"] = tuple(tuple(int(v) for v in layer) for layer in d["conv_layers"])
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if len(self.conv_layers) < 2:
            raise ValueError("conv_layers needs the sinc layer and at least one convolution")
        if self.conv_layers[0][1] % 2 != 1 or self.conv_layers[0][2] != 1:
            raise ValueError("the sinc layer needs an odd kernel and stride 1")
        if self.width % self.heads or self.width % self.pos_conv_groups:
            raise ValueError(
                f"width {self.width} must divide by heads {self.heads} and by "
                f"pos_conv_groups {self.pos_conv_groups}"
            )

    @property
    def stride(self) -> int:
        """Total stride of the feature extractor (samples per frame)."""
        return math.prod(s for _, _, s in self.conv_layers)

    @property
    def frames(self) -> int:
        """Feature-extractor frames per window."""
        n = int(round(self.sample_rate * self.window_s))
        for _, k, s in self.conv_layers[1:]:
            n = (n + 2 * math.ceil(s / 2) - k) // s + 1 if s > 1 else n
        return n


def mel_edges_hz(cfg: Animal2vecConfig) -> np.ndarray:
    """Initial band edges (Hz), evenly spaced on the SincNet mel scale; shape (filters + 1,)."""
    n_filters = cfg.conv_layers[0][0]
    high = cfg.sample_rate / 2 - (cfg.sinc_min_low_hz + cfg.sinc_min_band_hz)

    def to_mel(f):
        return MEL_SCALE * np.log10(1 + f / MEL_BREAK_HZ)

    mel = np.linspace(to_mel(cfg.sinc_min_low_hz), to_mel(high), n_filters + 1)
    return MEL_BREAK_HZ * (10 ** (mel / MEL_SCALE) - 1)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi head slopes, shape (heads,).

    For a power of two ``n``: the geometric series ``2^(-8 (h + 1) / n)``, h = 0 … n − 1, which for
    the published 16 heads is the spec's ``2^(-0.5 (h + 1))``. Other head counts take the series of
    the largest power of two below, then every other slope of the next power's series (the ALiBi
    paper's rule, which keeps slopes distinct and spread over the same range).
    """
    if heads < 1:
        raise ValueError(f"heads must be >= 1, got {heads}")

    def series(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    base = 1 << (heads.bit_length() - 1)  # largest power of two <= heads
    slopes = series(base) + series(2 * base)[0::2][: heads - base]
    return torch.tensor(slopes, dtype=torch.float64).float()


class SincConv(nn.Module):
    """SincNet band-pass bank: learnable low cut-off and band width per filter, rebuilt every call."""

    def __init__(self, cfg: Animal2vecConfig):
        super().__init__()
        n_filters, kernel, _ = cfg.conv_layers[0]
        self.sample_rate = cfg.sample_rate
        self.kernel = kernel
        self.min_low_hz = cfg.sinc_min_low_hz
        self.min_band_hz = cfg.sinc_min_band_hz
        edges = mel_edges_hz(cfg)
        self.low_hz_ = nn.Parameter(torch.empty(n_filters, 1))
        self.band_hz_ = nn.Parameter(torch.empty(n_filters, 1))
        with torch.no_grad():  # copy_ also works on the meta device (shapes only)
            self.low_hz_.copy_(torch.tensor(edges[:-1], device="cpu")[:, None])
            self.band_hz_.copy_(torch.tensor(np.diff(edges), device="cpu")[:, None])
        self.register_buffer("window", torch.empty(kernel // 2), persistent=False)
        self.register_buffer("n_", torch.empty(kernel // 2), persistent=False)
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)compute the constant buffers (also after building on the meta device)."""
        half = self.kernel // 2
        # Computed on the CPU: maths on the meta device would pull in slow-to-import decompositions.
        m = torch.linspace(0, self.kernel / 2 - 1, steps=half, device="cpu")
        window = WINDOW_A0 - WINDOW_A1 * torch.cos(2 * math.pi * m / self.kernel)  # (half,)
        # Angular time of the left half's taps (-half … -1 samples), rad per Hz.
        taps = torch.arange(-half, 0, dtype=torch.float32, device="cpu")
        self.window = window.to(self.window.device)
        self.n_ = (2 * math.pi * taps / self.sample_rate).to(self.n_.device)  # (half,)

    def filters(self) -> torch.Tensor:
        """The current filters, shape (filters, 1, kernel), float32."""
        low = self.min_low_hz + self.low_hz_.float().abs()  # (F, 1)
        high = torch.clamp(
            low + self.min_band_hz + self.band_hz_.float().abs(),
            self.min_low_hz,
            self.sample_rate / 2,
        )
        band = (high - low)[:, 0]  # (F,)
        n = self.n_.float()[None, :]  # (1, half); elementwise products keep fp32 under autocast
        left = (torch.sin(high * n) - torch.sin(low * n)) / (n / 2) * self.window.float()
        centre = 2 * band[:, None]
        bank = torch.cat([left, centre, left.flip(1)], dim=1) / (2 * band[:, None])  # (F, kernel)
        return bank[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, N) -> (B, F, N)
        pad = self.kernel // 2
        x = F.pad(x, (pad, pad), mode="reflect")
        return F.conv1d(x, self.filters().to(x.dtype))


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class PSwish(nn.Module):
    """Per-channel ``x * alpha * sigmoid(beta * x)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1, channels, 1), PSWISH_ALPHA))
        self.beta = nn.Parameter(torch.full((1, channels, 1), PSWISH_BETA))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha * torch.sigmoid(self.beta * x)


class SincLayer(nn.Module):
    def __init__(self, cfg: Animal2vecConfig):
        super().__init__()
        channels = cfg.conv_layers[0][0]
        self.sinc = SincConv(cfg)
        self.norm = ChannelNorm(channels, eps=LN_EPS)
        self.pswish = PSwish(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pswish(self.norm(self.sinc(x)))


class ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        # Strided layers pad ceil(stride / 2) each side; stride 1 is PyTorch "same": (k - 1) // 2 on
        # the left, the rest on the right (k = 2 pads right only). Explicit F.pad avoids the copy
        # warning of padding="same" with even kernels.
        if stride > 1:
            self.pad = (math.ceil(stride / 2),) * 2
        else:
            self.pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.norm = ChannelNorm(c_out, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(F.pad(x, self.pad))))


class FeatureExtractor(nn.Module):
    """Waveform (B, N) -> frames (B, C, T) with T = N / 40 for the published layers."""

    def __init__(self, cfg: Animal2vecConfig):
        super().__init__()
        layers: list[nn.Module] = [SincLayer(cfg)]
        c_in = cfg.conv_layers[0][0]
        for c_out, kernel, stride in cfg.conv_layers[1:]:
            layers.append(ConvLayer(c_in, c_out, kernel, stride))
            c_in = c_out
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :]  # (B, 1, N)
        for layer in self.layers:
            x = layer(x)
        return x  # (B, C, T)


class PosConvLayer(nn.Module):
    def __init__(self, width: int, kernel: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=groups)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, T)
        x = self.conv(x)
        x = F.layer_norm(x.transpose(1, 2), (self.width,), eps=LN_EPS).transpose(1, 2)
        return F.gelu(x)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Post-LayerNorm transformer block; also returns its FFN output (the data2vec target)."""

    def __init__(self, width: int, heads: int, ffn_dim: int):
        super().__init__()
        self.attn = Attention(width, heads)
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, ffn_dim)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm1(x + self.attn(x, bias))
        ffn = self.mlp(x)
        return self.norm2(x + ffn), ffn


class Animal2vecModel(nn.Module):
    """The encoder: waveform (B, N) -> per-frame representation (B, T, D)."""

    def __init__(self, cfg: Animal2vecConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.width
        c = cfg.conv_layers[-1][0]
        self.features = FeatureExtractor(cfg)
        self.proj_norm = nn.LayerNorm(c, eps=LN_EPS)
        self.proj = nn.Linear(c, d)
        self.pos_conv = nn.ModuleList(
            PosConvLayer(d, cfg.pos_conv_kernel, cfg.pos_conv_groups)
            for _ in range(cfg.pos_conv_layers)
        )
        self.alibi_scale = nn.Parameter(torch.ones(cfg.heads))
        self.register_buffer("alibi_slopes", torch.empty(cfg.heads), persistent=False)
        self.prenet_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.prenet = nn.ModuleList(
            Block(d, cfg.heads, cfg.ffn_dim) for _ in range(cfg.prenet_depth)
        )
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.ffn_dim) for _ in range(cfg.depth))
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else None
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)compute the non-persistent constant buffers."""
        self.alibi_slopes = alibi_slopes(self.cfg.heads).to(self.alibi_slopes.device)
        self.features.layers[0].sinc.init_buffers()

    @staticmethod
    def normalize(wave: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance per segment; (B, N) -> (B, N) float32."""
        wave = wave.float()
        return F.layer_norm(wave, wave.shape[-1:], eps=INPUT_NORM_EPS)

    def frontend(self, wave: torch.Tensor) -> torch.Tensor:
        """Feature-extractor frames of normalised audio; (B, N) -> (B, T, C)."""
        return self.features(self.normalize(wave)).transpose(1, 2)

    def alibi_bias(self, t: int) -> torch.Tensor:
        """ALiBi bias ``-slope * scale * |i - j|`` for t frames; shape (1, H, t, t), float32."""
        pos = torch.arange(t, device=self.alibi_slopes.device, dtype=torch.float32)
        dist = (pos[None, :] - pos[:, None]).abs()  # (t, t)
        slope = self.alibi_slopes * self.alibi_scale.float().clamp_min(0)  # (H,)
        return (-slope[:, None, None] * dist)[None]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Transformer part; frames (B, T, C) -> per-frame representation (B, T, D)."""
        x = self.proj(self.proj_norm(frames))  # (B, T, D)
        pos = x.transpose(1, 2)  # (B, D, T)
        for layer in self.pos_conv:
            pos = layer(pos)
        x = x + pos.transpose(1, 2)
        bias = self.alibi_bias(x.shape[1]).to(_compute_dtype(x))  # cast once, not per block
        x = self.prenet_norm(x)
        for block in self.prenet:
            x, _ = block(x, bias)
        rep = None
        for block in self.blocks:
            x, ffn = block(x, bias)
            rep = ffn.float() if rep is None else rep + ffn.float()
        return rep / len(self.blocks)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform (B, N) -> per-frame representation (B, T, D)."""
        return self.encode(self.frontend(wave))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform (B, N) -> window embedding (B, D): the time average of :meth:`forward`."""
        return self.forward(wave).mean(dim=1)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention runs in: the autocast dtype when autocast is on."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def count_parameters(cfg: Animal2vecConfig) -> int:
    """Parameters of a model with this config, counted on the meta device (allocates nothing)."""
    with torch.device("meta"):
        model = Animal2vecModel(cfg)
    return sum(p.numel() for p in model.parameters())


def build_model(cfg: Animal2vecConfig, seed: int = RANDOM_SEED) -> Animal2vecModel:
    """A randomly initialised model; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Animal2vecModel(cfg)
