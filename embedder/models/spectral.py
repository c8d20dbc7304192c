"""``spectral``: a training-free embedding of 5 s windows built from background-normalised log-mel
statistics. It needs no weights, runs in pure NumPy on a CPU, and is the default model.

What the vector is (default configuration, ``dim = 928``)
--------------------------------------------------------
1. Log-mel frontend: 32 kHz audio, Hann STFT with ``N_FFT = 1024`` (32 ms) and ``HOP = 320`` (10 ms),
   ``N_MELS = 64`` area-normalised triangular mel bands (HTK mel scale) from 150 Hz to 15 kHz, power
   in dB with a floor at ``FLOOR_DB``. One 5 s window gives a ``(500, 64)`` image (``frontend``).
2. Background normalisation, along time and then along frequency: frames of digital silence (zero
   padding of a short file's tail) are dropped; each band's median over the remaining frames
   (``background_pct = 50``: the stationary noise floor of wind, rain hiss, insect chorus, recorder
   self-noise) is subtracted. ``Z = logmel - background`` is "dB above the local noise floor",
   independent of gain and of stationary coloured noise; ``P = max(Z, 0)`` is the foreground.
   Broadband transients (rain drops, clicks, gust onsets, handling noise) are not stationary and lift
   whole frames; calls lift a few bands. ``Zf = Z - median over the bands of each frame of Z`` (and
   ``Pf = max(Zf, 0)``) removes them and keeps narrowband and harmonic calls; the blocks listed in
   ``frame_norm_blocks`` (default ``fm`` and ``patches``, the two that describe local shape) use
   ``Zf`` / ``Pf``. The level blocks keep ``Z``: there the frame median is part of the signal
   (broadband real calls) and removing it costs species retrieval on real recordings.
3. Five blocks computed from ``Z`` / ``P`` (or ``Zf`` / ``Pf``):

   ``bands`` (3 x 64)        per band: mean of P, 90th and 98th percentile of Z - where in frequency
                             the foreground lives and how far it rises above the noise floor.
   ``cepstrum`` (2 x 20)     activity-weighted mean and standard deviation of the DCT-II (MFCC-like)
                             of Z over frequency: spectral envelope of the calls.
   ``modulation`` (8 x 8)    temporal modulation spectrum of Z in 8 band groups, pooled into 8
                             log-spaced rates from 0.5 to 40 Hz: trills, pulse trains, call rates.
   ``fm`` (8 x 15)           frequency-shift histogram of Pf between frames 20 ms apart per band
                             group (shifts -7..+7 bands): rising / falling sweeps versus steady tones.
   ``patches`` (4 x 128)     8-frame x 8-band patches of Zf (stride 4 x 4), mean-removed, projected
                             on 128 fixed Gaussian random filters (seed ``PATCH_SEED``), ReLU, max
                             over time and over the positions in each of 4 frequency regions: "is
                             there a local shape like this anywhere in the window" (sweeps, pips).

4. Null-centring and combination: each block minus its mean on six deterministic white / pink / brown
   noise windows (``null_windows``, computed once at load), L2-normalised, scaled by ``sqrt(weight)``
   (equal weights 1), concatenated and L2-normalised, so cosine similarity is the dot
   product. A window with no signal (digital silence) gives the zero vector.

Block choice, weights, the percentile and the frame normalisation were chosen by
``benchmarks/spectral_compare.py`` (species retrieval on real recordings and planted-call retrieval in
synthetic soundscapes) and ``benchmarks/spectral_demo_seeds.py`` (the ``chorus demo`` acceptance
protocol over several seeds); results are in ``benchmarks/RESULTS.md`` under "Spectral embedding".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.fft

from embedder.base import Embedder

SAMPLE_RATE = 32000  # Hz
WINDOW_S = 5.0  # s
N_FFT = 1024  # samples (32 ms at 32 kHz)
HOP = 320  # samples (10 ms): 100 frames per second
N_MELS = 64  # mel bands
FMIN_HZ = 150.0  # lowest mel band edge (Hz); below is mostly wind and handling noise
FMAX_HZ = 15000.0  # highest mel band edge (Hz)
FLOOR_DB = -100.0  # dB; log floor, also the level of digital silence
SILENT_MARGIN_DB = 1.0  # dB; a frame whose loudest band is within this of the floor is silence
MIN_FRAMES = 10  # frames; fewer non-silent frames than this -> zero vector
N_CEPS = 20  # cepstral coefficients
N_GROUPS = 8  # band groups for the modulation and FM blocks (N_MELS // N_GROUPS bands each)
MOD_FMIN_HZ = 0.5  # Hz, lowest modulation rate
MOD_FMAX_HZ = 40.0  # Hz, highest modulation rate (< frame rate / 2 = 50 Hz)
N_MOD_BINS = 8  # log-spaced modulation-rate bins
FM_LAG = 2  # frames (20 ms) between the frames compared by the FM block
FM_MAX_SHIFT = 7  # mel bands; shifts -7..+7
PATCH_FRAMES, PATCH_BANDS = 8, 8  # random-patch block: patch size (80 ms x 8 mel bands)
PATCH_STRIDE = (4, 4)  # (frames, bands) between patches
N_PATCH_FILTERS = 128  # fixed random filters
N_PATCH_GROUPS = 4  # frequency regions the patch responses are max-pooled over
PATCH_SEED = 0  # the random filters are a fixed function of this seed
NULL_SEED = 12345  # seed of the synthetic noise windows used for null-centring
NULL_EXPONENTS = (0.0, 1.0, 2.0)  # white, pink and brown noise (power ~ 1/f**exponent)
NULL_PER_COLOUR = 2  # noise windows per colour
EPS = 1e-8

BLOCKS = ("bands", "cepstrum", "modulation", "fm", "patches")


@dataclass
class SpectralConfig:
    """Configuration of the spectral embedding; ``weights`` picks the blocks and their weights."""

    background_pct: float = 50.0  # percentile of each band over time taken as the noise floor
    block_weights: dict[str, float] = field(
        default_factory=lambda: {
            "bands": 1.0,
            "cepstrum": 1.0,
            "modulation": 1.0,
            "fm": 1.0,
            "patches": 1.0,
        }
    )
    # blocks computed from Z minus each frame's median over the bands (broadband transients removed)
    frame_norm_blocks: tuple[str, ...] = ("fm", "patches")

    def __post_init__(self) -> None:
        unknown = set(self.block_weights) - set(BLOCKS)
        if unknown:
            raise ValueError(f"spectral: unknown blocks {sorted(unknown)}; choose from {BLOCKS}")
        if not any(w > 0 for w in self.block_weights.values()):
            raise ValueError("spectral: block_weights needs at least one positive weight")
        self.frame_norm_blocks = tuple(self.frame_norm_blocks)  # a list when read back from JSON
        unknown = set(self.frame_norm_blocks) - set(BLOCKS)
        if unknown:
            raise ValueError(
                f"spectral: unknown frame_norm_blocks {sorted(unknown)}; choose from {BLOCKS}"
            )
        if not 0.0 <= self.background_pct <= 100.0:
            raise ValueError(
                f"spectral: background_pct must be in [0, 100], got {self.background_pct}"
            )


def block_dims() -> dict[str, int]:
    """Dimension of each feature block."""
    return {
        "bands": 3 * N_MELS,
        "cepstrum": 2 * N_CEPS,
        "modulation": N_GROUPS * N_MOD_BINS,
        "fm": N_GROUPS * (2 * FM_MAX_SHIFT + 1),
        "patches": N_PATCH_GROUPS * N_PATCH_FILTERS,
    }


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN_HZ,
    fmax: float = FMAX_HZ,
) -> np.ndarray:
    """Triangular mel filters, each scaled to unit area in Hz (``2 / (f_hi - f_lo)`` peak).

    Returns
    -------
    np.ndarray, float32, shape (n_fft // 2 + 1, n_mels)
    """
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft  # (K,) bin centre frequencies
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (M + 2,)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rising = (freqs[:, None] - lo) / (mid - lo)  # (K, M)
    falling = (hi - freqs[:, None]) / (hi - mid)  # (K, M)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    return (tri * (2.0 / (hi - lo))).astype(np.float32)


def dct_matrix(n_in: int = N_MELS, n_out: int = N_CEPS) -> np.ndarray:
    """Orthonormal DCT-II basis, shape (n_in, n_out): ``x @ D`` gives the first ``n_out`` coefficients."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    d = np.cos(np.pi * (n + 0.5) * k / n_in) * np.sqrt(2.0 / n_in)
    d[:, 0] /= np.sqrt(2.0)
    return d.astype(np.float32)


def log_mel(batch: np.ndarray, fbank: np.ndarray) -> np.ndarray:
    """Log-mel power spectrogram in dB.

    Parameters
    ----------
    batch : np.ndarray, float32, shape (n, samples)
    fbank : np.ndarray, shape (N_FFT // 2 + 1, n_mels)

    Returns
    -------
    np.ndarray, float32, shape (n, samples // HOP, n_mels)
    """
    n, samples = batch.shape
    pad = (N_FFT - HOP) // 2  # centres frame t on sample t * HOP + HOP / 2
    x = np.pad(batch, ((0, 0), (pad, N_FFT - HOP - pad)))
    n_frames = samples // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=1)[:, ::HOP][:, :n_frames]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    # scipy's FFT keeps float32 and is several times faster than numpy's here
    spec = scipy.fft.rfft(frames * window, axis=-1)  # (n, T, K) complex64
    power = (spec.real**2 + spec.imag**2) / np.float32(np.sum(window**2))
    mel = power @ fbank  # (n, T, M)
    return (10.0 * np.log10(np.maximum(mel, 10.0 ** (FLOOR_DB / 10.0)))).astype(np.float32)


def _modulation_bins(n_frames: int) -> tuple[int, np.ndarray]:
    """FFT length and bin -> modulation-band index (-1 = unused) for a sequence of ``n_frames``."""
    n_fft = int(2 ** np.ceil(np.log2(max(n_frames, 64))))
    rates = np.fft.rfftfreq(n_fft, d=HOP / SAMPLE_RATE)  # Hz
    edges = np.geomspace(MOD_FMIN_HZ, MOD_FMAX_HZ, N_MOD_BINS + 1)
    idx = np.searchsorted(edges, rates, side="right") - 1
    idx[(rates < MOD_FMIN_HZ) | (rates >= MOD_FMAX_HZ)] = -1
    return n_fft, idx


def _block_bands(z: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.percentile(z, [90.0, 98.0], axis=0)  # (2, F)
    return np.concatenate([p.mean(axis=0), q[0], q[1]])


def _block_cepstrum(z: np.ndarray, p: np.ndarray, dct: np.ndarray) -> np.ndarray:
    ceps = z @ dct  # (T, C)
    w = p.mean(axis=1) + EPS  # (T,) activity: loud frames describe the calls
    w = w / w.sum()
    mean = w @ ceps
    std = np.sqrt(np.maximum(w @ (ceps - mean) ** 2, 0.0))
    return np.concatenate([mean, std])


def _block_modulation(z: np.ndarray) -> np.ndarray:
    t = z.shape[0]
    g = z.reshape(t, N_GROUPS, -1).mean(axis=2)  # (T, G)
    g = g - g.mean(axis=0)
    n_fft, idx = _modulation_bins(t)
    power = np.abs(np.fft.rfft(g, n=n_fft, axis=0)) ** 2 / t  # (K, G)
    pooled = np.zeros((N_MOD_BINS, N_GROUPS))
    np.add.at(pooled, idx[idx >= 0], power[idx >= 0])
    counts = np.bincount(idx[idx >= 0], minlength=N_MOD_BINS)[:, None]
    return np.log1p(pooled / np.maximum(counts, 1)).T.ravel()  # (G * bins,)


def _block_fm(p: np.ndarray) -> np.ndarray:
    s = FM_MAX_SHIFT
    a = p[:-FM_LAG]  # (T - L, F)
    b = np.pad(p[FM_LAG:], ((0, 0), (s, s)))  # (T - L, F + 2s)
    f = p.shape[1]
    # corr[k, f] = sum_t a[t, f] * b[t, f + k - s]: energy moving by (k - s) bands in 20 ms
    corr = np.stack([np.einsum("tf,tf->f", a, b[:, k : k + f]) for k in range(2 * s + 1)])
    grouped = corr.reshape(2 * s + 1, N_GROUPS, -1).sum(axis=2).T  # (G, shifts)
    hist = grouped / (grouped.sum(axis=1, keepdims=True) + EPS)
    return np.sqrt(hist).ravel()  # Hellinger map: cosine on it compares distributions


def patch_filters(seed: int = PATCH_SEED) -> np.ndarray:
    """Fixed random filters for the ``patches`` block, shape (PATCH_FRAMES * PATCH_BANDS, N_PATCH_FILTERS)."""
    rng = np.random.default_rng(seed)
    n_in = PATCH_FRAMES * PATCH_BANDS
    return (rng.standard_normal((n_in, N_PATCH_FILTERS)) / np.sqrt(n_in)).astype(np.float32)


def _block_patches(z: np.ndarray, filters: np.ndarray) -> np.ndarray:
    # local spectro-temporal shapes (sweeps, pips, harmonic stacks): strongest response per filter
    patches = np.lib.stride_tricks.sliding_window_view(z, (PATCH_FRAMES, PATCH_BANDS))
    patches = patches[:: PATCH_STRIDE[0], :: PATCH_STRIDE[1]]  # (T', F', pt, pf)
    t, f = patches.shape[:2]
    patches = patches.reshape(t, f, -1)  # (T', F', pt * pf)
    patches = patches - patches.mean(axis=2, keepdims=True)  # shape, not level
    resp = np.maximum(patches.astype(np.float32) @ filters, 0.0)  # (T', F', filters)
    return np.concatenate(
        [resp[:, g].max(axis=(0, 1)) for g in np.array_split(np.arange(f), N_PATCH_GROUPS)]
    )


@dataclass
class _Tables:
    """Constant matrices the features need (built once per model)."""

    dct: np.ndarray  # (N_MELS, N_CEPS)
    filters: np.ndarray  # (PATCH_FRAMES * PATCH_BANDS, N_PATCH_FILTERS)


def raw_blocks(logmel: np.ndarray, config: SpectralConfig, tables: _Tables) -> dict | None:
    """Un-normalised feature blocks of one window, or None when it holds (almost) no signal.

    Parameters
    ----------
    logmel : np.ndarray, shape (T, N_MELS), dB

    Returns
    -------
    dict block name -> np.ndarray (block_dims()[name],), for the blocks with a positive weight
    """
    valid = logmel.max(axis=1) > FLOOR_DB + SILENT_MARGIN_DB  # drop zero padding
    if valid.sum() < max(MIN_FRAMES, PATCH_FRAMES):
        return None
    s = logmel[valid].astype(np.float64)  # (T', F)
    z = s - np.percentile(s, config.background_pct, axis=0)  # dB above the band's noise floor
    # A broadband transient (rain drop, click, handling noise) lifts a whole frame; a call lifts a
    # few bands. Removing each frame's median over the bands keeps the calls and drops the clicks.
    zf = z - np.median(z, axis=1, keepdims=True)  # (T', F)
    planes = {False: (z, np.maximum(z, 0.0)), True: (zf, np.maximum(zf, 0.0))}
    makers = {
        "bands": lambda z, p: _block_bands(z, p),
        "cepstrum": lambda z, p: _block_cepstrum(z, p, tables.dct),
        "modulation": lambda z, p: _block_modulation(z),
        "fm": lambda z, p: _block_fm(p),
        "patches": lambda z, p: _block_patches(z, tables.filters),
    }
    return {
        b: makers[b](*planes[b in config.frame_norm_blocks])
        for b in BLOCKS
        if config.block_weights.get(b, 0.0) > 0.0
    }


def null_windows(sample_rate: int = SAMPLE_RATE, window_s: float = WINDOW_S) -> np.ndarray:
    """Deterministic white / pink / brown Gaussian noise windows, shape (6, samples), float32.

    Their mean features are what a window of pure stationary noise looks like; subtracting them
    removes the per-band bias of the statistics (narrow low bands fluctuate more than wide high ones),
    so that noise windows sit near the origin instead of sharing one direction.
    """
    rng = np.random.default_rng(NULL_SEED)
    n = int(round(sample_rate * window_s))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    out = []
    for exponent in NULL_EXPONENTS:
        for _ in range(NULL_PER_COLOUR):
            x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / freqs ** (exponent / 2), n)
            out.append(0.05 * x / x.std())
    return np.stack(out).astype(np.float32)


def combine_blocks(blocks: dict | None, null: dict, config: SpectralConfig, dim: int) -> np.ndarray:
    """Null-centre each block, L2-normalise it, weight by ``sqrt(weight)``, concatenate, normalise.

    Returns
    -------
    np.ndarray, float32, shape (dim,), unit norm (zeros when ``blocks`` is None)
    """
    if blocks is None:
        return np.zeros(dim, dtype=np.float32)
    parts = []
    for name, v in blocks.items():
        v = v - null[name]
        parts.append(v * np.sqrt(config.block_weights[name]) / (np.linalg.norm(v) + EPS))
    vec = np.concatenate(parts)
    return (vec / (np.linalg.norm(vec) + EPS)).astype(np.float32)


class SpectralEmbedder(Embedder):
    """Training-free background-normalised log-mel statistics embedding (see module docstring)."""

    name = "spectral"
    sample_rate = SAMPLE_RATE
    window_s = WINDOW_S

    def __init__(self, config: SpectralConfig | None = None, batch_size: int = 64) -> None:
        self.config = config or SpectralConfig()
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"spectral: batch_size must be >= 1, got {batch_size}")
        self.dim = sum(
            d for b, d in block_dims().items() if self.config.block_weights.get(b, 0.0) > 0.0
        )
        self.weights = "training-free"
        self._fbank = mel_filterbank()
        self._tables = _Tables(dct_matrix(), patch_filters())
        null = [
            raw_blocks(m, self.config, self._tables) for m in log_mel(null_windows(), self._fbank)
        ]
        self._null = {b: np.mean([n[b] for n in null], axis=0) for b in null[0]}

    def features(self, logmel: np.ndarray) -> np.ndarray:
        """Embedding of one window from its log-mel image ``(T, N_MELS)``; shape (dim,), float32."""
        blocks = raw_blocks(logmel, self.config, self._tables)
        return combine_blocks(blocks, self._null, self.config, self.dim)

    def frontend(self, batch: np.ndarray) -> np.ndarray:
        """Log-mel power spectrogram (dB) the embedding is computed from.

        Parameters
        ----------
        batch : np.ndarray, float32, shape (n, 160000)

        Returns
        -------
        np.ndarray, float32, shape (n, 500, 64): 10 ms frames x mel bands (150 Hz - 15 kHz)
        """
        return log_mel(self.check_batch(batch), self._fbank)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed windows of raw audio.

        Parameters
        ----------
        batch : np.ndarray, float32, shape (n, 160000)
            Mono audio at 32 kHz.

        Returns
        -------
        np.ndarray, float32, shape (n, dim), rows of unit norm (zeros for silent windows)
        """
        x = self.check_batch(batch)
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        for start in range(0, x.shape[0], self.batch_size):
            mels = log_mel(x[start : start + self.batch_size], self._fbank)  # (b, T, F)
            for i, m in enumerate(mels):
                out[start + i] = self.features(m)
        return out

    def config_dict(self) -> dict:
        """Model description for ``chorus.json``, including the feature configuration."""
        d = super().config_dict()
        d["config"] = asdict(self.config)
        return d


def load(weights: str | None = None, device: str = "auto", **options) -> SpectralEmbedder:
    """Registry entry point for ``embedder.load_model("spectral")``.

    Parameters
    ----------
    weights : None or "training-free"
        The model has no weights; any path is refused so a misconfiguration is not silently ignored.
    device : str
        Ignored (NumPy on the CPU).
    **options
        ``batch_size`` (windows per STFT batch), ``background_pct``, ``block_weights``,
        ``frame_norm_blocks``.
    """
    if weights not in (None, "training-free"):
        raise ValueError(
            f"spectral: the model is training-free and takes no weights, got {weights!r}"
        )
    batch_size = options.pop("batch_size", 64)
    try:
        config = SpectralConfig(**options)
    except TypeError as exc:
        raise ValueError(f"spectral: bad option: {exc}") from None
    return SpectralEmbedder(config, batch_size=batch_size)
