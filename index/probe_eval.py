"""How a probe is judged: grouped cross-validation, thresholds, metrics and their uncertainty.

Cross-validation is grouped by recording: windows of one recording are strongly correlated
(neighbouring windows, same site and background), so a split that puts them on both sides reports
optimistic numbers. With few recordings that hold positives, each of them is left out in turn
(with a share of the other recordings), so every positive is scored by a probe that never saw its
recording. Metrics from a handful of recordings swing with which recordings happen to be there, so
the average precision carries a bootstrap interval over recordings, and a wide one says the figure
is too uncertain to trust. Thresholds are chosen on the out-of-fold scores; when no threshold
reaches a target precision the choice says so instead of passing off the best one as a hit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

PR_CURVE_POINTS = 200  # precision/recall points kept in stored metrics
FEW_POSITIVE_RECORDINGS = 10  # up to this many recordings with positives: leave each out in turn
N_BOOTSTRAP = 200  # recording-level resamples for the average-precision interval
CI_LEVEL = 0.9  # coverage of that interval
MAX_CI_WIDTH = 0.3  # a wider average-precision interval is too uncertain to trust
MIN_TRUSTED_RECORDINGS = 5  # positives from fewer recordings: too few to trust any CV figure

Folds = list[tuple[np.ndarray, np.ndarray]]


# -- folds -------------------------------------------------------------------------------------
def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int = 5, seed: int = 0) -> Folds:
    """Train/test index pairs with every group (recording) on one side only.

    With 2 to ``FEW_POSITIVE_RECORDINGS`` recordings holding positives, one fold per such
    recording (leave-one-recording-out; recordings without positives are shared out among the
    folds). Otherwise stratified by "has a positive", the number of folds capped by the number of
    groups.
    """
    y = np.asarray(y)
    strat = (y.reshape(len(y), -1) > 0).any(1).astype(int)
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    pos_groups = len(np.unique(groups[strat == 1]))
    if n_groups < 2:
        raise ValueError("cross-validation needs labelled windows from at least two recordings")
    if 2 <= pos_groups <= FEW_POSITIVE_RECORDINGS:
        return _leave_one_positive_recording_out(strat, groups, seed)
    k = min(n_splits, n_groups, max(pos_groups, 2))
    if pos_groups >= k and (strat == 0).any():
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), strat, groups)]
    return list(GroupKFold(n_splits=k).split(np.zeros(len(y)), strat, groups))


def _leave_one_positive_recording_out(strat: np.ndarray, groups: np.ndarray, seed: int) -> Folds:
    pos = np.unique(groups[strat == 1])
    rest = np.random.default_rng(seed).permutation(np.setdiff1d(np.unique(groups), pos))
    fold_of = np.concatenate([np.arange(len(pos)), np.arange(len(rest)) % len(pos)])
    keys = np.concatenate([pos, rest])
    order = np.argsort(keys)
    fold = fold_of[order][np.searchsorted(keys[order], groups)]  # (n,) fold of each row
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(len(pos))]


def cv_scheme(folds: Folds, y: np.ndarray, groups: np.ndarray) -> str:
    """A short name of the scheme ``grouped_folds`` chose, for reports."""
    strat = (np.asarray(y).reshape(len(y), -1) > 0).any(1)
    pos_groups = len(np.unique(np.asarray(groups)[strat]))
    if 2 <= pos_groups <= FEW_POSITIVE_RECORDINGS and len(folds) == pos_groups:
        return "leave-one-recording-out"
    return f"grouped {len(folds)}-fold"


def fold_summary(folds: Folds, y: np.ndarray, groups: np.ndarray, rows: np.ndarray) -> list[dict]:
    """Recordings, positives and negatives of each test fold among the evaluated ``rows`` (bool)."""
    out = []
    for _, te in folds:
        te = te[rows[te]]
        out.append(
            {
                "recordings": int(len(np.unique(groups[te]))),
                "positives": int((y[te] == 1).sum()),
                "negatives": int((y[te] == 0).sum()),
            }
        )
    return out


def cross_val_scores(
    make_probe: Callable,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    sample_weight: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
    folds: Folds | None = None,
) -> np.ndarray:
    """Out-of-fold positive-class probabilities, (n,) or (n, L), from grouped CV.

    A training fold that lacks one class among its rows of positive weight predicts that class.
    ``folds`` defaults to ``grouped_folds(y, groups, n_splits, seed)``.
    """
    y = np.asarray(y)
    Y = y.reshape(len(y), -1)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight)
    out = np.zeros(Y.shape, dtype=np.float64)
    for tr, te in folds if folds is not None else grouped_folds(y, groups, n_splits, seed):
        for j in range(Y.shape[1]):
            t = Y[tr, j]
            w = sw[tr] if sw.ndim == 1 else sw[tr, j]
            seen = t[w > 0]  # rows of weight 0 (unsure) teach nothing
            if len(seen) == 0 or seen.min() == seen.max():
                out[te, j] = float(seen[0]) if len(seen) else 0.0
                continue
            out[te, j] = make_probe().fit(X[tr], t, sample_weight=w).positive_scores(X[te])
    return out[:, 0] if y.ndim == 1 else out


# -- thresholds --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what the cross-validation says it gives.

    ``target`` is the precision asked for (None when the threshold was given or chosen by F1);
    ``precision`` / ``recall`` are the cross-validated values at ``threshold`` (None if unknown).
    """

    threshold: float
    precision: float | None = None
    recall: float | None = None
    target: float | None = None

    @property
    def reached(self) -> bool:
        """False when a target precision was asked for and no threshold reaches it."""
        return self.target is None or (self.precision is not None and self.precision >= self.target)

    def note(self, label: str) -> str | None:
        """One line for the user when the target is unreachable, else None."""
        if self.reached:
            return None
        return (
            f"{label}: target precision {self.target:g} is unreachable; the best "
            f"cross-validated precision is {self.precision:.3f} (recall {self.recall:.3f}) at "
            f"threshold {self.threshold:.3f}, which is used"
        )


def threshold_for_precision(
    y_true: np.ndarray, scores: np.ndarray, target: float, sample_weight: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Lowest threshold whose precision reaches ``target`` (so recall is highest).

    Returns (threshold, precision, recall). When no threshold reaches the target, the lowest
    threshold with the best precision is returned (its precision tells the caller it fell short).
    """
    precision, recall, thresholds = precision_recall_curve(
        y_true, scores, sample_weight=sample_weight
    )
    c = _pick(thresholds, precision[:-1], recall[:-1], target)  # the last point has no threshold
    return c.threshold, c.precision, c.recall


def choice_from_curve(pr_curve: dict, target: float) -> ThresholdChoice:
    """Threshold for a target precision from a stored ``evaluate(...)["pr_curve"]``."""
    t = np.asarray(pr_curve["threshold"])
    n = len(t)  # the stored curve may end with the (precision 1, recall 0) point: no threshold
    p, r = np.asarray(pr_curve["precision"])[:n], np.asarray(pr_curve["recall"])[:n]
    return _pick(t, p, r, target)


def threshold_from_curve(pr_curve: dict, target: float) -> float:
    """Threshold for a target precision from a stored ``evaluate(...)["pr_curve"]``."""
    return choice_from_curve(pr_curve, target).threshold


def _pick(t: np.ndarray, p: np.ndarray, r: np.ndarray, target: float) -> ThresholdChoice:
    ok = np.flatnonzero(p >= target)
    i = int(ok[0]) if len(ok) else int(np.argmax(p))
    return ThresholdChoice(float(t[i]), float(p[i]), float(r[i]), float(target))


def choose_threshold(y: np.ndarray, s: np.ndarray, precision: float | None) -> ThresholdChoice:
    """Threshold on out-of-fold scores: for a target ``precision``, else at the best F1."""
    if y.min() == y.max():
        return ThresholdChoice(0.5, target=precision)
    if precision is not None:
        return ThresholdChoice(*threshold_for_precision(y, s, precision), target=precision)
    p, r, t = precision_recall_curve(y, s)
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    i = int(np.argmax(f1))
    return ThresholdChoice(float(t[i]), float(p[i]), float(r[i]))


# -- metrics -----------------------------------------------------------------------------------
def evaluate(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    sample_weight: np.ndarray | None = None,
) -> dict:
    """Average precision, ROC-AUC and precision/recall at ``threshold`` for one binary label.

    Also a down-sampled precision-recall curve so thresholds for any precision can be found later.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((1 - y_true).sum())
    out = {"n_pos": n_pos, "n_neg": n_neg, "threshold": float(threshold)}
    if n_pos == 0 or n_neg == 0:
        return {
            **out,
            "average_precision": None,
            "roc_auc": None,
            "precision": None,
            "recall": None,
        }
    pred = scores >= threshold
    sw = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight)
    tp = float((sw * (pred & (y_true == 1))).sum())
    fp = float((sw * (pred & (y_true == 0))).sum())
    fn = float((sw * (~pred & (y_true == 1))).sum())
    precision, recall, thresholds = precision_recall_curve(y_true, scores, sample_weight=sw)
    keep = np.unique(np.linspace(0, len(thresholds) - 1, PR_CURVE_POINTS).astype(int))
    return {
        **out,
        "average_precision": float(average_precision_score(y_true, scores, sample_weight=sw)),
        "roc_auc": float(roc_auc_score(y_true, scores, sample_weight=sw)),
        "precision": tp / (tp + fp) if tp + fp > 0 else 1.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "pr_curve": {
            "threshold": thresholds[keep].round(6).tolist(),
            "precision": precision[keep].round(6).tolist(),
            "recall": recall[keep].round(6).tolist(),
        },
    }


def bootstrap_ap_interval(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile interval of the average precision over recordings drawn with replacement.

    Windows of a recording rise and fall together, so recordings, not windows, are resampled.
    None when fewer than two recordings hold positives (no interval can speak for them).
    """
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    if len(np.unique(groups[y == 1])) < 2:
        return None
    order = np.argsort(groups, kind="stable")
    uniq, starts = np.unique(groups[order], return_index=True)
    members = np.split(order, starts[1:])  # row indices of each recording
    rng = np.random.default_rng(seed)
    aps = []
    for _ in range(n_boot):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        yb = y[rows]
        if 0 < yb.sum() < len(yb):
            aps.append(average_precision_score(yb, scores[rows]))
    if len(aps) < n_boot // 2:
        return None
    lo, hi = np.quantile(aps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def judge_uncertainty(
    m: dict, y: np.ndarray, scores: np.ndarray, groups: np.ndarray, seed: int = 0
) -> dict:
    """Add ``average_precision_ci``, ``ci_level`` and ``uncertain`` (with ``why_uncertain``).

    Too uncertain: positives in fewer than ``MIN_TRUSTED_RECORDINGS`` recordings (a bootstrap
    over so few recordings is itself unreliable: it has only a handful of distinct resamples),
    or an average-precision interval wider than ``MAX_CI_WIDTH``.
    """
    ci = bootstrap_ap_interval(y, scores, groups, seed=seed)
    pos_recordings = len(np.unique(np.asarray(groups)[np.asarray(y) == 1]))
    m["average_precision_ci"] = list(ci) if ci else None
    m["ci_level"] = CI_LEVEL
    why = None
    if pos_recordings < MIN_TRUSTED_RECORDINGS:
        why = f"positives in only {pos_recordings} recording(s)"
    elif ci is None or ci[1] - ci[0] > MAX_CI_WIDTH:
        span = "none" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"
        why = f"the {CI_LEVEL:.0%} interval of the average precision over recordings is {span}"
    m["uncertain"] = why is not None
    if why:
        m["why_uncertain"] = why
    return m


def describe_cv(m: dict) -> str | None:
    """One line: the CV scheme, each fold's recordings/positives, and whether to trust it."""
    folds = m.get("folds")
    if not folds:
        return None
    parts = ", ".join(f"{f['recordings']}/{f['positives']}" for f in folds)
    line = f"{m.get('cv_scheme', 'grouped CV')}, {len(folds)} folds (recordings/positives: {parts})"
    ci = m.get("average_precision_ci")
    if ci:
        line += f"; AP {CI_LEVEL:.0%} interval {ci[0]:.2f}-{ci[1]:.2f}"
    if m.get("uncertain"):
        line += f"; too uncertain to trust ({m.get('why_uncertain')}): label more recordings"
    return line


def target_note(label: str, m: dict) -> str | None:
    """The unreachable-target line for stored metrics (None when reached or not asked for)."""
    if m.get("target_reached", True) or m.get("precision") is None:
        return None
    return ThresholdChoice(m["threshold"], m["precision"], m["recall"], m["target_precision"]).note(
        label
    )
