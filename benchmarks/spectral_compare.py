"""Compare training-free embedding variants for the ``spectral`` model and time the chosen one.

Tasks
-----
(a) species retrieval on real recordings (``--xc``, default ``/work/shared/data/xc-sample``: 24 files,
    8 species, 3 each). Every file is cut into 5 s windows at hop 5 s (a tail of >= 1 s, or a file
    shorter than 5 s, is zero-padded); a recording's vector is the mean of its unit-norm window vectors
    ("mean") or recordings are compared by their best-matching window pair ("max-pair"). Each recording
    queries the other 23 by cosine similarity: P@1 (nearest-neighbour accuracy), P@2 (= R-precision,
    2 relevant per query) and mAP.
(b) the demo task (``explorer.demo``): synthetic 2-minute soundscapes with planted sweeps, hoots and
    trills at -5..+15 dB over pink noise / wind / rain. Windows on the 5 s grid are searched with a
    5 s window centred on a planted call; windows overlapping the query are excluded; P@10 with the
    demo's own query (SNR closest to +5 dB, one per type) and averaged over every planted call as query.

Usage: ``OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/spectral_compare.py [--seeds 0 1]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedder.models import spectral as sp  # noqa: E402

XC_DIR = Path("/work/shared/data/xc-sample")
HOP_S = 5.0  # s
MIN_TAIL_S = 1.0  # s: shorter tails are dropped (unless the file has no full window)
RP_FILTERS = 128  # random-projection variant: number of random patch filters
RP_PATCH = (8, 8)  # (frames, bands) per patch
RP_STRIDE = (4, 4)


# --- audio ------------------------------------------------------------------------------------------


def load_mono(path: Path, sr: int) -> np.ndarray:
    """Decode by content, mix to mono, resample. Uses embedder.audio when it exists."""
    try:
        from embedder import audio

        return audio.load(path, sr, "mix")[0]
    except ImportError:
        import soundfile as sf
        import soxr

        with open(path, "rb") as fh:  # a file object: libsndfile sniffs the container from content
            x, rate = sf.read(fh, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        return soxr.resample(x, rate, sr).astype(np.float32) if rate != sr else x


def grid_windows(x: np.ndarray, sr: int, window_s: float = 5.0, hop_s: float = HOP_S) -> np.ndarray:
    """(W, window) windows at ``hop_s``; the tail is zero-padded when long enough. Shape (W, win)."""
    win, hop = int(sr * window_s), int(sr * hop_s)
    out = []
    for i in range(0, max(len(x), 1), hop):
        seg = x[i : i + win]
        if len(seg) < win and out and len(seg) < MIN_TAIL_S * sr:
            break
        out.append(np.pad(seg, (0, win - len(seg))))
        if i + win >= len(x):
            break
    return np.stack(out).astype(np.float32)


# --- variants (each maps log-mel images (n, T, F) to embeddings (n, d)) ----------------------------


def spectral_variant(**cfg):
    model = sp.SpectralEmbedder(sp.SpectralConfig(**cfg))
    return lambda mels: np.stack([model.features(m) for m in mels])


def mfcc_baseline(mels: np.ndarray) -> np.ndarray:
    """Classic: mean + std of 20 MFCCs (c0..c19 of the raw log-mel) and of their deltas -> 80 dims."""
    ceps = mels @ sp.dct_matrix()  # (n, T, 20)
    delta = np.diff(ceps, axis=1)  # (n, T-1, 20)
    return np.concatenate([ceps.mean(1), ceps.std(1), delta.mean(1), delta.std(1)], axis=1)


def logmel_mean(mels: np.ndarray) -> np.ndarray:
    """Mean log-mel per band (64 dims)."""
    return mels.mean(axis=1)


def zscore(fn):
    """Standardise each feature over the evaluated corpus (uses corpus statistics: not per-window)."""

    def run(mels):
        e = fn(mels)
        return (e - e.mean(0)) / (e.std(0) + 1e-8)

    return run


def variants() -> dict:
    p20 = {"background_pct": 20.0}
    raw = {"frame_norm_blocks": ()}  # per-band background subtraction only
    hand = {"bands": 1.0, "cepstrum": 1.0, "modulation": 0.5, "fm": 0.5}
    prev = {**hand, "patches": 3.0}  # the default before frame normalisation
    new = sp.SpectralConfig().block_weights
    return {
        "mfcc mean+std+delta (baseline)": mfcc_baseline,
        "mfcc baseline, corpus z-scored": zscore(mfcc_baseline),
        "log-mel band means": logmel_mean,
        "bands, bg p20": spectral_variant(block_weights={"bands": 1}, **p20),
        "bands, bg median": spectral_variant(block_weights={"bands": 1}),
        "bands, frame-norm": spectral_variant(
            block_weights={"bands": 1}, frame_norm_blocks=("bands",)
        ),
        "cepstrum": spectral_variant(block_weights={"cepstrum": 1}),
        "modulation": spectral_variant(block_weights={"modulation": 1}),
        "fm": spectral_variant(block_weights={"fm": 1}, **raw),
        "fm, frame-norm": spectral_variant(block_weights={"fm": 1}),
        "patches": spectral_variant(block_weights={"patches": 1}, **raw),
        "patches, frame-norm": spectral_variant(block_weights={"patches": 1}),
        "bands+cepstrum": spectral_variant(block_weights={"bands": 1, "cepstrum": 1}),
        "hand-crafted 4 blocks, bg p20": spectral_variant(block_weights=hand, **p20, **raw),
        "hand-crafted 4 blocks, bg median": spectral_variant(block_weights=hand, **raw),
        "PREVIOUS DEFAULT: 4 blocks + patches x3": spectral_variant(block_weights=prev, **raw),
        "previous weights, frame-norm fm+patches": spectral_variant(block_weights=prev),
        "4 blocks + patches x9": spectral_variant(block_weights={**hand, "patches": 9.0}, **raw),
        "new weights, no frame-norm": spectral_variant(**raw),
        "new weights, frame-norm on all blocks": spectral_variant(frame_norm_blocks=sp.BLOCKS),
        "new weights, fm x2, patches x3": spectral_variant(
            block_weights={**new, "fm": 2.0, "patches": 3.0}
        ),
        "new weights, modulation x0.5": spectral_variant(block_weights={**new, "modulation": 0.5}),
        "DEFAULT: frame-norm fm+patches, equal weights": spectral_variant(),
    }


# --- metrics ---------------------------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def ranking_metrics(sim: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """P@1, P@2 and mAP for each row as a query against all other rows."""
    n = len(labels)
    p1, p2, aps = [], [], []
    for q in range(n):
        others = np.delete(np.arange(n), q)
        order = others[np.argsort(-sim[q, others], kind="stable")]
        rel = labels[order] == labels[q]
        hits = np.cumsum(rel)
        p1.append(rel[0])
        p2.append(rel[:2].mean())
        aps.append(np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / max(rel.sum(), 1))
    return {"P@1": np.mean(p1), "P@2": np.mean(p2), "mAP": np.mean(aps)}


def xc_task(mels_per_file: list[np.ndarray], labels: np.ndarray, fn) -> dict[str, float]:
    vecs = [unit(fn(m)) for m in mels_per_file]  # each (W_i, d)
    rec = unit(np.stack([v.mean(0) for v in vecs]))
    res = {f"xc {k}": v for k, v in ranking_metrics(rec @ rec.T, labels).items()}
    n = len(vecs)
    pair = np.array([[np.max(vecs[i] @ vecs[j].T) for j in range(n)] for i in range(n)])
    res["xc mAP max-pair"] = ranking_metrics(pair, labels)["mAP"]
    return res


def demo_task(demo: dict, fn) -> dict[str, float]:
    """P@10 per seed with the demo's queries and with every planted call as a query."""
    from explorer.demo import CALL_TYPES, QUERY_SNR_DB, K

    demo_p, all_p = [], []
    for d in demo:
        db = unit(fn(d["mels"]))  # (W, d) grid windows
        qv = unit(fn(d["query_mels"]))  # (Q, d) one per planted call
        truth = d["truth"]
        for qi, call in enumerate(truth.itertuples()):
            sim = db @ qv[qi]
            # as in explorer.demo.run_demo: drop windows overlapping the query call itself
            own = (d["win_file"] == call.file) & (d["win_end"] > call.start_s)
            own &= d["win_start"] < call.end_s
            sim[own] = -np.inf
            top = np.argsort(-sim, kind="stable")[:K]
            p = np.mean([d["win_types"][i] == call.call_type for i in top])
            all_p.append(p)
        for t in CALL_TYPES:
            calls = truth[truth.call_type == t]
            qi = calls.index[np.argmin(np.abs(calls.snr_db.to_numpy() - QUERY_SNR_DB))]
            demo_p.append(all_p[len(all_p) - len(truth) + qi])
    return {
        "demo P@10 (demo queries)": np.mean(demo_p),
        "demo min P@10 (demo queries)": np.min(demo_p),
        "demo P@10 (all calls)": np.mean(all_p),
    }


# --- data preparation ------------------------------------------------------------------------------


def prepare_xc(xc_dir: Path, fbank: np.ndarray):
    meta = pd.read_csv(xc_dir / "metadata.csv")
    mels = [
        sp.log_mel(grid_windows(load_mono(xc_dir / p, sp.SAMPLE_RATE), sp.SAMPLE_RATE), fbank)
        for p in meta.path
    ]
    return mels, meta.species.to_numpy()


def prepare_demo(seed: int, fbank: np.ndarray, tmp: Path) -> dict:
    import soundfile as sf

    from explorer.demo import make_demo_archive, relevant

    truth = make_demo_archive(tmp / f"demo{seed}", seed=seed)
    sr, win = sp.SAMPLE_RATE, int(sp.SAMPLE_RATE * sp.WINDOW_S)
    windows, files, starts, qwin = [], [], [], []
    for f in sorted(truth.file.unique()):
        x, rate = sf.read(tmp / f"demo{seed}" / "audio" / f, dtype="float32")
        assert rate == sr
        w = grid_windows(x, sr)
        windows.append(w)
        files += [f] * len(w)
        starts += list(np.arange(len(w)) * HOP_S)
        for call in truth[truth.file == f].itertuples():
            c = 0.5 * (call.start_s + call.end_s)
            i = int(round(min(max(c - 2.5, 0.0), len(x) / sr - 5.0) * sr))
            qwin.append((call.Index, x[i : i + win]))
    qwin = [w for _, w in sorted(qwin, key=lambda t: t[0])]
    files, starts = np.array(files), np.array(starts)
    types = []
    for f, s in zip(files, starts, strict=True):
        t = [c for c in ("sweep", "hoot", "trill") if relevant(truth, c, f, s, s + 5.0)]
        types.append(t[0] if t else "none")
    return {
        "truth": truth,
        "mels": sp.log_mel(np.concatenate(windows), fbank),
        "query_mels": sp.log_mel(np.stack(qwin), fbank),
        "win_file": files,
        "win_start": starts,
        "win_end": starts + 5.0,
        "win_types": np.array(types),
    }


def markdown(rows: list[dict]) -> str:
    """A GitHub markdown table of the result rows (floats to 3 decimals)."""
    cols = list(rows[0])
    fmt = [lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)][0]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def time_default(n: int = 290, repeats: int = 3) -> tuple[float, float]:
    """Median windows/s of ``load_model('spectral').embed`` on ``n`` windows of noise.

    Returns (wall-clock windows/s, CPU-time windows/s); the second is what one idle core would do and
    is less disturbed by other processes on a shared machine.
    """
    import embedder

    m = embedder.load_model("spectral")
    x = np.random.default_rng(0).standard_normal((n, m.window_samples)).astype(np.float32) * 0.05
    m.embed(x[:8])
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        m.embed(x)
        wall.append(n / (time.perf_counter() - t))
        cpu.append(n / (time.process_time() - c))
    return float(np.median(wall)), float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--xc", type=Path, default=XC_DIR)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="*", help="substrings of variant names to run")
    ap.add_argument("--time-only", action="store_true", help="only time the default model")
    args = ap.parse_args()
    if args.time_only:
        wall, cpu = time_default()
        print(f"windows/s: {wall:.1f} wall-clock, {cpu:.1f} per CPU-second")
        return
    fbank = sp.mel_filterbank()
    xc_mels, xc_labels = prepare_xc(args.xc, fbank)
    with tempfile.TemporaryDirectory() as tmp:
        demo = [prepare_demo(s, fbank, Path(tmp)) for s in args.seeds]
    rows = []
    for name, fn in variants().items():
        if args.only and not any(o in name for o in args.only):
            continue
        t = time.perf_counter()
        row = {"variant": name, "dim": int(unit(fn(xc_mels[0][:1])).shape[1])}
        row.update(xc_task(xc_mels, xc_labels, fn))
        row.update(demo_task(demo, fn))
        row["s"] = time.perf_counter() - t
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if k != "variant"))
    print()
    print(markdown(rows))
    wall, cpu = time_default()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"\nspectral embed, 290 windows, median of 3: {wall:.1f} windows/s wall-clock, ")
    print(f"{cpu:.1f} windows/s per CPU-second (load average {load})")


if __name__ == "__main__":
    main()
