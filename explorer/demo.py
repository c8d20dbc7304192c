"""``chorus demo``: a small synthetic soundscape archive with planted calls, and the whole loop run on it.

The archive imitates autonomous recorders at three sites: two-minute recordings at 32 kHz over
realistic backgrounds (coloured noise, wind-like rumble, rain-like clicks, a faint distant chorus), with
three planted call types at known times and signal-to-noise ratios between -5 and +15 dB:

- ``sweep``: a downward FM sweep 7 → 3 kHz in 0.35 s (warbler-like),
- ``hoot``: a harmonic hoot at 450–520 Hz with four harmonics, 0.7 s (owl/dove-like),
- ``trill``: a fast trill, 18 pulses/s of 12 ms 4.2 kHz tone pips over 1.2 s.

Calls sit inside the 5 s hop grid so that each window holds at most one call type; the truth table
(``truth.csv``) lists every call with its file, type, start, end and SNR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SAMPLE_RATE = 32_000  # Hz, the rate of the demo recordings
DURATION_S = 120.0  # s per recording
SITES = ("north_ridge", "river_bend", "old_forest")
RECORDINGS_PER_SITE = 4
SLOT_S = 5.0  # s, the demo's window grid; calls never cross a slot boundary
CALLS_PER_RECORDING = 8
SNR_RANGE_DB = (-5.0, 15.0)
CALL_TYPES = ("sweep", "hoot", "trill")
QUERY_SNR_DB = 5.0  # the demo queries with the planted example whose SNR is closest to this
K = 10  # precision@K


# --- call synthesis -------------------------------------------------------------------------------


def _envelope(n: int, attack: float = 0.1) -> np.ndarray:
    """Raised-cosine attack and release over ``attack`` of the length."""
    env = np.ones(n)
    m = max(1, int(n * attack))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, m))
    env[:m], env[-m:] = ramp, ramp[::-1]
    return env


def sweep(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Downward FM sweep, ~7 → 3 kHz, 0.35 s, with small random variation."""
    dur = 0.35 * rng.uniform(0.9, 1.1)
    t = np.arange(int(dur * sr)) / sr
    f0, f1 = 7000 * rng.uniform(0.95, 1.05), 3000 * rng.uniform(0.95, 1.05)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur))
    return np.sin(phase) * _envelope(t.size)


def hoot(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Harmonic hoot: fundamental 450–520 Hz with 4 decaying harmonics and a slight pitch drop, 0.7 s."""
    dur = 0.7 * rng.uniform(0.9, 1.1)
    t = np.arange(int(dur * sr)) / sr
    f = rng.uniform(450, 520) * (1 - 0.06 * t / dur)
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum((0.6**h) * np.sin((h + 1) * phase) for h in range(5))
    return x * _envelope(t.size, 0.25)


def trill(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Fast trill: 18 pulses/s of 4.2 kHz tone pips (12 ms each) over 1.2 s."""
    rate, dur, pip_s = 18 * rng.uniform(0.9, 1.1), 1.2, 0.012
    freq = 4200 * rng.uniform(0.97, 1.03)
    x = np.zeros(int(dur * sr))
    pip_t = np.arange(int(pip_s * sr)) / sr
    pip = np.sin(2 * np.pi * freq * pip_t) * np.hanning(pip_t.size)
    for k in range(int(dur * rate)):
        i = int(k / rate * sr)
        x[i : i + pip.size] += pip[: x.size - i]
    return x


CALLS = {"sweep": sweep, "hoot": hoot, "trill": trill}


# --- backgrounds ----------------------------------------------------------------------------------


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (1 = pink, 2 = brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return x / x.std()


def _wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low rumble (brown noise) with slow gusts (0.05–0.3 Hz amplitude modulation)."""
    t = np.arange(n) / sr
    gust = 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3))
    return _coloured_noise(rng, n, 2.0) * gust


def _rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Sparse broadband drops: exponentially decaying noise bursts at ~40 per second."""
    x = np.zeros(n)
    drop = rng.standard_normal(int(0.004 * sr)) * np.exp(-np.linspace(0, 6, int(0.004 * sr)))
    for i in rng.integers(0, n - drop.size, size=int(40 * n / sr)):
        x[i : i + drop.size] += drop * rng.uniform(0.2, 1.0)
    return x / (x.std() + 1e-12)


def background(rng: np.random.Generator, n: int, sr: int, site: int) -> np.ndarray:
    """A site-specific mix of pink noise, wind and rain; unit RMS."""
    weights = [(1.0, 0.8, 0.2), (0.7, 0.3, 0.9), (1.0, 0.5, 0.4)][site % 3]
    x = (
        weights[0] * _coloured_noise(rng, n, 1.0)
        + weights[1] * _wind(rng, n, sr)
        + weights[2] * _rain(rng, n, sr)
    )
    return x / x.std()


# --- archive --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoQuery:
    """One planted call used as a query."""

    call_type: str
    path: Path
    start_s: float
    end_s: float
    snr_db: float


def make_demo_archive(out_dir: str | Path, seed: int = 0) -> pd.DataFrame:
    """Write the demo archive and its truth table.

    Parameters
    ----------
    out_dir : path
        Folder to create; recordings go to ``<out_dir>/audio/<site>/<site>_<YYYYMMDD_HHMMSS>.wav`` and
        the truth table to ``<out_dir>/truth.csv``.
    seed : int
        Everything is reproducible from this seed.

    Returns
    -------
    pandas.DataFrame
        One row per planted call: ``file`` (relative to the audio folder), ``site``, ``call_type``,
        ``start_s``, ``end_s``, ``snr_db``.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n = int(DURATION_S * SAMPLE_RATE)
    n_slots = int(DURATION_S // SLOT_S)
    rows = []
    for s, site in enumerate(SITES):
        (out / "audio" / site).mkdir(parents=True, exist_ok=True)
        for r in range(RECORDINGS_PER_SITE):
            name = f"{site}/{site}_202406{10 + r:02d}_0{4 + s}3000.wav"
            x = background(rng, n, SAMPLE_RATE, s)
            types = np.resize(np.array(CALL_TYPES), CALLS_PER_RECORDING)
            rng.shuffle(types)
            slots = rng.choice(n_slots, size=CALLS_PER_RECORDING, replace=False)
            for call_type, slot in zip(types, slots, strict=True):
                call = CALLS[str(call_type)](rng)
                snr = rng.uniform(*SNR_RANGE_DB)
                # SNR = call power over its duration / background power, broadband.
                call *= 10 ** (snr / 20) / np.sqrt(np.mean(call**2))
                start = slot * SLOT_S + rng.uniform(0.2, SLOT_S - 0.2 - call.size / SAMPLE_RATE)
                i = int(start * SAMPLE_RATE)
                x[i : i + call.size] += call
                end = start + call.size / SAMPLE_RATE
                rows.append(
                    (name, site, str(call_type), round(start, 3), round(end, 3), round(snr, 2))
                )
            x *= 0.05 / x.std()  # a quiet field level, well away from clipping
            sf.write(out / "audio" / name, x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    truth = pd.DataFrame(rows, columns=["file", "site", "call_type", "start_s", "end_s", "snr_db"])
    truth.to_csv(out / "truth.csv", index=False)
    return truth


def pick_queries(truth: pd.DataFrame, audio_dir: Path) -> list[DemoQuery]:
    """One planted example per call type: the one whose SNR is closest to ``QUERY_SNR_DB``."""
    queries = []
    for call_type in CALL_TYPES:
        calls = truth[truth.call_type == call_type]
        row = calls.iloc[int(np.argmin(np.abs(calls.snr_db.to_numpy() - QUERY_SNR_DB)))]
        queries.append(
            DemoQuery(call_type, audio_dir / row.file, row.start_s, row.end_s, row.snr_db)
        )
    return queries


def relevant(truth: pd.DataFrame, call_type: str, file: str, start_s: float, end_s: float) -> bool:
    """A window is relevant when it holds at least half of a planted call of that type."""
    calls = truth[(truth.call_type == call_type) & (truth.file == file)]
    overlap = np.minimum(calls.end_s, end_s) - np.maximum(calls.start_s, start_s)
    return bool(np.any(overlap >= 0.5 * (calls.end_s - calls.start_s)))


@dataclass
class DemoResult:
    """What the demo measured: precision@K per call type, and timings (s)."""

    precision: dict[str, float]
    n_windows: int
    seconds: dict[str, float]


def run_demo(
    out_dir: str | Path,
    model: str = "spectral",
    seed: int = 0,
    progress: bool = True,
    weights: str | None = None,
) -> DemoResult:
    """Make the archive, embed it, search with one planted example per call type, score precision@K.

    Each query is the 5 s slot holding the planted call; the windows overlapping the call are excluded
    from the hits, so the score counts only *other* calls found.
    """
    import index
    from explorer.ingest import embed_archive, embed_span  # torch-free until needed

    out = Path(out_dir)
    t0 = time.perf_counter()
    truth = make_demo_archive(out, seed)
    t1 = time.perf_counter()
    db_path = out / "demo.chorus"
    summary = embed_archive(out / "audio", db_path, model=model, weights=weights, progress=progress)
    t2 = time.perf_counter()
    db = index.connect(db_path)
    precision = {}
    for q in pick_queries(truth, out / "audio"):
        # the query is the call's own 5 s slot: a window centred on the call could reach into
        # the neighbouring slot and pick up a louder call of another type
        slot = np.floor(q.start_s / SLOT_S) * SLOT_S
        vec = embed_span(db, model, q.path, slot, slot + SLOT_S)
        hits = db.search(model, vec).limit(K + 4).to_pandas()
        rel_file = q.path.relative_to(out / "audio").as_posix()
        own = (hits.path == rel_file) & (hits.end_s > q.start_s) & (hits.start_s < q.end_s)
        hits = hits[~own].head(K)
        precision[q.call_type] = float(
            np.mean(
                [
                    relevant(truth, q.call_type, h.path, h.start_s, h.end_s)
                    for h in hits.itertuples()
                ]
            )
        )
    t3 = time.perf_counter()
    return DemoResult(
        precision,
        summary.n_windows,
        {"synthesise": t1 - t0, "embed": t2 - t1, "search": t3 - t2, "total": t3 - t0},
    )
