"""Perch-2.0 log-mel frontend and per-window normalisation, as PyTorch modules computed on the device.

The numbers follow ``specs/perch2.md``: frames of 20 ms with a 10 ms hop, a 1024-point FFT of a Hann-windowed
frame, magnitude divided by the window sum, a ``tf.signal.linear_to_mel_weight_matrix``-style mel matrix and
``0.1 * ln(max(mel, floor))``. The released checkpoint's conventions are the defaults; the reference code's
conventions stay available as options (periodic window, 320-sample padding, floor 1e-2).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 32_000  # Hz
WINDOW_S = 5.0  # s per embedded window
FRAME_LENGTH = 640  # samples (20 ms)
HOP_LENGTH = 320  # samples (10 ms)
FFT_SIZE = 1024  # samples; 513 rfft bins
N_MELS = 128
MEL_LOW_HZ = 60.0  # Hz, lower edge of the first mel band
MEL_HIGH_HZ = 16_000.0  # Hz, upper edge of the last mel band (Nyquist)
LOG_FLOOR = 1e-5  # magnitude floor before the log (released checkpoint); reference code uses 1e-2
LOG_SCALE = 0.1  # log-mel = LOG_SCALE * ln(max(mel, floor))
NORM_PEAK = 0.25  # per-window peak amplitude after normalisation
SILENCE_EPS = 1e-8  # a window with max|x - mean| below this is left at zero
HTK_MEL_BREAK_HZ = 700.0  # Hz, HTK mel formula constant
HTK_MEL_HIGH_Q = 1127.0  # HTK mel formula multiplier

WINDOW_TYPES = ("symmetric", "periodic")
PADDING_MODES = ("center160", "reference320")


def hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale ``1127 ln(1 + f / 700)``."""
    return HTK_MEL_HIGH_Q * np.log1p(np.asarray(f_hz, dtype=np.float64) / HTK_MEL_BREAK_HZ)


def mel_matrix(
    n_bins: int = FFT_SIZE // 2 + 1,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = MEL_LOW_HZ,
    high_hz: float = MEL_HIGH_HZ,
) -> np.ndarray:
    """Triangular mel weights with the construction of ``tf.signal.linear_to_mel_weight_matrix``.

    Returns
    -------
    np.ndarray, float64, shape (n_bins, n_mels)
        Row 0 (DC) is all zeros; no area normalisation.
    """
    bin_mel = hz_to_mel(np.linspace(0.0, sample_rate / 2, n_bins))[1:, None]  # (n_bins - 1, 1)
    edges = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), n_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,) each
    rising = (bin_mel - lower) / (center - lower)
    falling = (upper - bin_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_bins - 1, n_mels)
    return np.concatenate([np.zeros((1, n_mels)), weights], axis=0)  # (n_bins, n_mels)


def hann_window(length: int = FRAME_LENGTH, kind: str = "symmetric") -> np.ndarray:
    """Hann window; ``symmetric`` equals ``numpy.hanning(length)``, ``periodic`` drops the last point."""
    if kind not in WINDOW_TYPES:
        raise ValueError(f"window type must be one of {WINDOW_TYPES}, got {kind!r}")
    n = length if kind == "symmetric" else length + 1
    return np.hanning(n)[:length]


def normalize_windows(x: torch.Tensor) -> torch.Tensor:
    """Subtract each window's mean and scale it to a peak of ``NORM_PEAK``; silent windows stay zero.

    Parameters
    ----------
    x : torch.Tensor, shape (B, n)

    Returns
    -------
    torch.Tensor, shape (B, n), same dtype
    """
    # the mean in float64: in float32 a constant (DC-only, i.e. silent) window leaves a rounding
    # residue above SILENCE_EPS that would then be scaled up to full level (mps has no float64)
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    centered = x - x.mean(dim=-1, keepdim=True, dtype=acc).to(x.dtype)
    peak = centered.abs().amax(dim=-1, keepdim=True)  # (B, 1)
    silent = peak < SILENCE_EPS
    scale = torch.where(silent, torch.zeros_like(peak), NORM_PEAK / peak.clamp_min(SILENCE_EPS))
    return centered * scale


class LogMelFrontend(nn.Module):
    """Raw audio (B, n) -> log-mel (B, frames, mel) = (B, 500, 128) for 5 s at 32 kHz.

    Runs in float32 (or float64 if the buffers are cast) with autocast disabled, because the log of
    small magnitudes is too coarse in 16-bit formats.
    """

    def __init__(
        self,
        window_type: str = "symmetric",
        padding_mode: str = "center160",
        log_floor: float = LOG_FLOOR,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        window = hann_window(FRAME_LENGTH, window_type)
        self.register_buffer(
            "window", torch.tensor(window / window.sum(), dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "mel", torch.tensor(mel_matrix(), dtype=torch.float32), persistent=False
        )
        self.padding_mode = padding_mode
        self.log_floor = float(log_floor)
        self.normalize = normalize
        # Windows per slice (0 = whole batch at once). On CPU, small slices keep the per-batch
        # intermediates in cache and out of the page-faulting large-block allocator. Each window
        # is independent, so the output does not change.
        self.micro_batch = 0

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n) -> (B, T, FRAME_LENGTH) overlapping frames; T = n / HOP_LENGTH for 5 s windows."""
        if self.padding_mode == "center160":
            # 160 zeros each side: frame i covers samples [320 i - 160, 320 i + 480).
            pad = (FRAME_LENGTH - HOP_LENGTH) // 2
            x = F.pad(x, (pad, pad))
            return x.unfold(-1, FRAME_LENGTH, HOP_LENGTH)  # (B, T, 640)
        # Reference code: 320 zeros each side, then the last frame is dropped.
        x = F.pad(x, (HOP_LENGTH, HOP_LENGTH))
        return x.unfold(-1, FRAME_LENGTH, HOP_LENGTH)[:, :-1]  # (B, T, 640)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n) raw audio -> (B, T, N_MELS) log-mel."""
        if self.micro_batch and len(x) > self.micro_batch:
            return torch.cat([self.log_mel(part) for part in x.split(self.micro_batch)])
        return self.log_mel(x)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on one slice of windows."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = self.mel.dtype
            x = x.to(dtype)
            if self.normalize:
                x = normalize_windows(x)
            framed = self.frames(x) * self.window  # (B, T, 640), window already divided by its sum
            spectrum = torch.view_as_real(torch.fft.rfft(framed, n=FFT_SIZE, dim=-1))  # (B,T,513,2)
            re, im = spectrum[..., 0], spectrum[..., 1]
            # |z| as sqrt(re^2 + im^2), faster than complex abs() (hypot) on CPU; magnitudes
            # of normalised audio are far from the float32 overflow/underflow range hypot guards.
            magnitude = torch.addcmul(re * re, im, im).sqrt_()  # (B, T, 513)
            mel = magnitude @ self.mel  # (B, T, 128)
            return LOG_SCALE * torch.log(mel.clamp_min(self.log_floor))


def log_floor_value(floor: float = LOG_FLOOR) -> float:
    """The frontend's output for silence (−1.1512925 for the default floor)."""
    return LOG_SCALE * math.log(floor)
