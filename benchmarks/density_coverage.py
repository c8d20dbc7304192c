"""Coverage of call-density intervals on synthetic archives with known call rates.

For each call rate and score separation, many seeds: one group of windows with planted calls
(positives score ``sep`` higher), a stratified sample validated by a perfect validator, and the
90 % interval of ``index.density`` beside the call-density notebook's posterior
(``Beta(pos + 0.1, neg + 0.1)`` per stratum). Prints the fraction of seeds whose interval holds
the true density, and the mean width. Run: ``python benchmarks/density_coverage.py [SEEDS]``.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from index.density import LEVEL, plan_validation, stratified_interval

RATES = (0.0, 0.005, 0.02, 0.1, 0.3, 0.6)
SEPARATIONS = (1.0, 2.0, 4.0)
N_WINDOWS, PER_STRATUM, DRAWS = 400, 10, 4000


def _notebook(rng, w, pos, neg, prior=0.1):
    draws = sum(
        wk * rng.beta(p + prior, n + prior, DRAWS) for wk, p, n in zip(w, pos, neg, strict=True)
    )
    return np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])


def main(seeds: int) -> None:
    rows = []
    for sep in SEPARATIONS:
        for rate in RATES:
            ours, nb = [], []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                z = rng.random(N_WINDOWS) < rate
                score = rng.normal(size=N_WINDOWS) + sep * z
                w = pd.DataFrame(
                    {"g": 0, "window_id": np.arange(N_WINDOWS), "score": score, "kind": None}
                )
                strata, sample = plan_validation(w, ["g"], PER_STRATUM, seed=seed)
                hit = z[sample["window_id"].to_numpy()]
                st = sample["stratum"].to_numpy()
                k = len(strata)
                pos = np.bincount(st[hit], minlength=k)
                neg = np.bincount(st[~hit], minlength=k)
                wk = strata["n_windows"].to_numpy() / N_WINDOWS
                truth = z.mean()
                _, lo, hi = stratified_interval(wk, pos, neg, LEVEL, DRAWS, rng)
                nlo, nhi = _notebook(rng, wk, pos, neg)
                ours.append((lo <= truth <= hi, hi - lo))
                nb.append((nlo <= truth <= nhi, nhi - nlo))
            o, n = np.asarray(ours), np.asarray(nb)
            rows.append((sep, rate, o[:, 0].mean(), o[:, 1].mean(), n[:, 0].mean(), n[:, 1].mean()))
    out = pd.DataFrame(
        rows, columns=["sep", "rate", "cover", "width", "notebook_cover", "notebook_width"]
    )
    print(out.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
