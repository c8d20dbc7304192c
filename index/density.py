"""Call density: the fraction of windows that hold a call, per site and time bin, with an interval.

The method of perch-hoplite's call-density notebook (Navine et al. 2024, "Counting birds with call
density"): a probe's scores are not trusted as they are, only used to stratify. Within each group
(e.g. one site in one week) the windows are split by score rank into strata (by default the
bottom half, the next quarter, the next eighth and the top eighth: positives are rare, so the
strata narrow toward the top), a few windows per stratum are drawn at random and validated by a
person (ordinary labels of the probe's label, positive or negative), and the density is the
stratum-weighted sum of the per-stratum fractions of positives::

    density = sum_k  w_k * pos_k / (pos_k + neg_k),      w_k = windows in stratum k / windows

The interval combines per-stratum beta distributions by the stratum weights and is read off
sampled sums, as the notebook does. Its beta pair is the one behind the exact (Clopper-Pearson)
binomial interval: the lower end from ``Beta(pos, neg + 1)``, the upper from ``Beta(pos + 1, neg)``
(the construction Fay & Feuer use for weighted sums of rates). The notebook's single posterior
``Beta(pos + 0.1, neg + 0.1)`` misses the truth for rare calls: with none of 10 validations
positive in the bottom half, its lower end excludes 0, and a Jeffreys prior overstates rare
densities; the pair stays at or above the nominal coverage at every call rate we simulated
(benchmarks/RESULTS.md).

The validation sample is a simple random sample per stratum that does not move when more audio is
added: windows are taken in the order of a seeded hash of their window id. Windows a person
marked "unsure" are passed over (the next in hash order takes their place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

BOUNDS = (0.0, 0.5, 0.75, 0.875, 1.0)  # score-rank quantiles that bound the strata
PER_STRATUM = 10  # validations per stratum and group
LEVEL = 0.9  # two-sided interval level
N_DRAWS = 20_000  # sampled sums per group: quantiles at 5 % / 95 % move by < 0.002
# a label validates a window when it covers this much of the window (or of a shorter label):
# stricter than training's 0.5, so a label on one window does not validate its overlapping neighbours
VALIDATION_OVERLAP = 0.9
TODO_COLUMNS = ["path", "start_s", "end_s", "score", "label", "kind"]


def assign_strata(scores: np.ndarray, bounds: Sequence[float] = BOUNDS) -> np.ndarray:
    """Stratum (0 = lowest scores) of each score by its rank: stratum k holds the ranks r with
    ``bounds[k] <= r / n < bounds[k + 1]``, so ties cannot empty a stratum.

    Parameters
    ----------
    scores : (n,) scores of one group.
    bounds : increasing quantiles from 0 to 1, one more than the strata.

    Returns
    -------
    np.ndarray
        (n,) int stratum indices.
    """
    b = _check_bounds(bounds)
    scores = np.asarray(scores, float)
    n = len(scores)
    rank = np.empty(n, np.int64)
    rank[np.argsort(scores, kind="stable")] = np.arange(n)
    return np.searchsorted(b[1:-1], rank / max(n, 1), side="right")


def _check_bounds(bounds: Sequence[float]) -> np.ndarray:
    b = np.asarray(bounds, float)
    if len(b) < 2 or b[0] != 0.0 or b[-1] != 1.0 or (np.diff(b) <= 0).any():
        raise ValueError(f"stratum bounds must rise from 0 to 1, got {list(bounds)}")
    return b


def sample_keys(window_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """A pseudo-random key (n,) uint64 per window id (SplitMix64 of the id and the seed): taking
    windows in key order is a random sample that stays put when other windows come and go."""
    x = np.asarray(window_ids, np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15) * np.uint64(int(seed) + 1)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def plan_validation(
    windows: pd.DataFrame,
    by: Sequence[str],
    per_stratum: int = PER_STRATUM,
    bounds: Sequence[float] = BOUNDS,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Strata and the validation sample of every group (pure).

    Parameters
    ----------
    windows : one row per window: the group columns ``by``, window_id, score, kind (the
        validation label of the window: "positive", "negative", "unsure", or None/NaN).
    per_stratum : windows to validate per stratum (all of them in a smaller stratum).

    Returns
    -------
    strata : pandas.DataFrame
        ``by``, stratum, n_windows — one row per non-empty stratum of each group.
    sample : pandas.DataFrame
        The planned windows: ``by``, stratum, window_id, score, kind, plus any other columns of
        ``windows``; unsure windows are passed over.
    """
    if per_stratum < 1:
        raise ValueError(f"per_stratum must be >= 1, got {per_stratum}")
    by = list(by)
    df = windows.sort_values("window_id", kind="stable").reset_index(drop=True)
    stratum = np.zeros(len(df), np.int64)
    for rows in df.groupby(by, sort=False).indices.values():
        stratum[rows] = assign_strata(df["score"].to_numpy()[rows], bounds)
    df = df.assign(stratum=stratum, _key=sample_keys(df["window_id"].to_numpy(), seed))
    strata = df.groupby([*by, "stratum"]).size().rename("n_windows").reset_index()
    free = df[df["kind"].fillna("") != "unsure"].sort_values([*by, "stratum", "_key"])
    sample = free[free.groupby([*by, "stratum"]).cumcount() < per_stratum]
    return strata, sample.drop(columns="_key").reset_index(drop=True)


def stratified_interval(
    weights: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    level: float = LEVEL,
    n_draws: int = N_DRAWS,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """Density and interval from per-stratum validation counts.

    Parameters
    ----------
    weights : (K,) stratum weights (fractions of the group's windows; they sum to 1).
    pos, neg : (K,) validated positive and negative windows per stratum.
    level : two-sided level of the interval.

    Returns
    -------
    (density, low, high)
        density is NaN while a stratum has no validation; the interval is then still honest
        (that stratum spans its whole weight).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = rng or np.random.default_rng(0)
    w, pos, neg = (np.asarray(a, float) for a in (weights, pos, neg))
    n = pos + neg
    density = float((w * pos / np.where(n > 0, n, 1)).sum()) if (n > 0).all() else float("nan")
    low = _beta_sum(rng, w, pos, neg + 1, n_draws)
    high = _beta_sum(rng, w, pos + 1, neg, n_draws)
    alpha = (1 - level) / 2
    return density, float(np.quantile(low, alpha)), float(np.quantile(high, 1 - alpha))


def _beta_sum(rng, w: np.ndarray, a: np.ndarray, b: np.ndarray, n_draws: int) -> np.ndarray:
    """Draws (n_draws,) of sum_k w_k * Beta(a_k, b_k), Beta(0, b) = 0 and Beta(a, 0) = 1."""
    total = np.zeros(n_draws)
    for wk, ak, bk in zip(w, a, b, strict=True):
        if ak <= 0 or wk == 0:
            continue
        total += wk * (1.0 if bk <= 0 else rng.beta(ak, bk, n_draws))
    return total


def estimate_density(
    strata: pd.DataFrame,
    sample: pd.DataFrame,
    by: Sequence[str],
    level: float = LEVEL,
    n_draws: int = N_DRAWS,
    seed: int = 0,
) -> pd.DataFrame:
    """Density with interval per group from the labels present in the sample (pure).

    Parameters
    ----------
    strata, sample : as returned by ``plan_validation`` (sample ``kind`` filled in where labelled).

    Returns
    -------
    pandas.DataFrame
        ``by``, windows, density (NaN until every stratum has a validation), low, high,
        positives, validated (positive or negative windows of the sample), needed (the sample's
        size), sorted by group.
    """
    by = list(by)
    rng = np.random.default_rng(seed)
    kind = sample["kind"].fillna("")
    counts = (
        sample.assign(pos=(kind == "positive").astype(int), neg=(kind == "negative").astype(int))
        .groupby([*by, "stratum"])[["pos", "neg"]]
        .sum()
        .reset_index()
    )
    size = sample.groupby([*by, "stratum"]).size().rename("planned").reset_index()
    full = strata.merge(counts, on=[*by, "stratum"], how="left").merge(
        size, on=[*by, "stratum"], how="left"
    )
    full[["pos", "neg", "planned"]] = full[["pos", "neg", "planned"]].fillna(0).astype(int)
    rows = []
    for key, g in full.groupby(by, sort=True):
        n = int(g["n_windows"].sum())
        d, lo, hi = stratified_interval(
            g["n_windows"].to_numpy() / n, g["pos"], g["neg"], level, n_draws, rng
        )
        done = int(g["pos"].sum() + g["neg"].sum())
        rows.append([*key, n, d, lo, hi, int(g["pos"].sum()), done, int(g["planned"].sum())])
    cols = [*by, "windows", "density", "low", "high", "positives", "validated", "needed"]
    return pd.DataFrame(rows, columns=cols)


@dataclass
class DensityResult:
    """What ``call_density`` found.

    Attributes
    ----------
    table : per group: ``by``, windows, density, low, high, positives, validated, needed.
    todo : windows of the sample still to validate: path, start_s, end_s, score, label, kind
        ("skip", for ``chorus label --import``), the group columns, stratum, recording_id and
        window_id.
    label, level : the probe's label and the interval's level.
    """

    table: pd.DataFrame
    todo: pd.DataFrame
    label: str
    level: float


def call_density(
    db,
    probe_id: int,
    by: str | Sequence[str] = ("site", "week"),
    per_stratum: int = PER_STRATUM,
    bounds: Sequence[float] = BOUNDS,
    label: str | None = None,
    level: float = LEVEL,
    seed: int = 0,
    scorer=None,
) -> DensityResult:
    """Call density per group of a stored probe's label, from the validations labelled so far.

    Scores every window of the probe's model, plans the stratified sample of each group (see
    ``plan_validation``), reads validations from the labels named like the probe's label that
    cover a sampled window (``VALIDATION_OVERLAP``), and estimates each group's density.
    """
    from index.activity import group_keys, parse_by
    from index.classify import score_windows
    from index.labels import window_labels
    from index.probe import load_probe

    by = parse_by(by)
    rec = load_probe(db, probe_id)
    j = rec.label_index(label)
    name = rec.labels[j]
    meta, scores = score_windows(db, rec.model, rec.probe.coef_, rec.probe.intercept_, scorer)
    recordings = db.recordings()
    keys = group_keys(meta["recording_id"].to_numpy(), meta["start_s"].to_numpy(), recordings, by)
    covered = window_labels(db, rec.model, name, VALIDATION_OVERLAP)[["window_id", "kind"]]
    windows = pd.concat([keys, meta.assign(score=scores[:, j])], axis=1)
    windows = windows.merge(covered, on="window_id", how="left")
    strata, sample = plan_validation(windows, by, per_stratum, bounds, seed)
    table = estimate_density(strata, sample, by, level, seed=seed)
    todo = sample[~sample["kind"].isin(["positive", "negative"])]
    todo = todo.merge(recordings[["recording_id", "path"]], on="recording_id", how="left")
    ids = ["recording_id", "window_id"]  # where each window is (the explorer shows it as a card)
    todo = todo.assign(label=name, kind="skip")[[*TODO_COLUMNS, *by, "stratum", *ids]]
    return DensityResult(table, todo.reset_index(drop=True), name, level)
