"""Linear probes: logistic-regression heads on frozen embeddings, and how to judge them.

``LinearProbe`` follows scikit-learn's estimator contract (``fit(X, y, sample_weight)``,
``predict_proba``, ``predict``, ``decision_function``, ``classes_``, ``coef_``, ``intercept_``)
for binary and one-vs-rest multi-label problems. Each label is a scikit-learn pipeline,
``StandardScaler`` then ``LogisticRegression`` (L-BFGS), fitted with that label's sample weights;
``coef_`` / ``intercept_`` fold the scaling back into the raw feature space, so scoring an archive
(or a probe loaded from the probes table) is one matrix product.

Cross-validation is grouped by recording: windows of one recording are strongly correlated
(neighbouring windows, same site and background), so a split that puts them on both sides reports
optimistic numbers. Thresholds are chosen on the out-of-fold scores.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.sparse import issparse
from scipy.special import expit
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from index.probe_eval import (  # noqa: F401 - evaluation names stay importable from here
    PR_CURVE_POINTS,
    ThresholdChoice,
    choice_from_curve,
    choose_threshold,
    cross_val_scores,
    cv_scheme,
    evaluate,
    fold_summary,
    grouped_folds,
    judge_uncertainty,
    threshold_for_precision,
    threshold_from_curve,
)

DEFAULT_C = 1.0  # inverse L2 strength on standardised features, as in scikit-learn
MAX_ITER = 100  # L-BFGS iterations (scikit-learn's default)
TOL = 1e-4  # L-BFGS gradient tolerance (scikit-learn's default)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression: one scikit-learn pipeline per label (one-vs-rest).

    Parameters
    ----------
    C : float
        Inverse regularisation strength of ``LogisticRegression`` (on standardised features
        when ``standardize``).
    class_weight : None, "balanced" or dict
        "balanced" reweights each label so its positives and negatives carry equal total weight,
        counting sample weights (scikit-learn's own "balanced" counts rows, so a thousand weak
        negatives of weight 0.05 would weigh as a thousand full negatives).
    standardize : bool
        Put a ``StandardScaler`` before the regression, fitted on the rows of positive weight
        (unweighted: a row of weight 0 changes nothing, a weak negative counts as a window of
        the archive): embeddings have tiny per-dimension variance, which makes ``C`` meaningless
        and L-BFGS slow on raw features.
    max_iter, tol : int, float
        L-BFGS stopping rules, passed to ``LogisticRegression``.

    Attributes
    ----------
    estimators_ : list of sklearn.pipeline.Pipeline
        The fitted pipeline of each label (empty for a probe rebuilt by ``from_weights``).
    coef_ : (L, d) raw-space weights; intercept_ : (L,) raw-space biases.
    """

    def __init__(
        self,
        C: float = DEFAULT_C,
        class_weight: str | dict | None = None,
        standardize: bool = True,
        max_iter: int = MAX_ITER,
        tol: float = TOL,
    ):
        self.C = C
        self.class_weight = class_weight
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None):
        """Fit on X (n, d) and y.

        Parameters
        ----------
        X : (n, d) array of vectors.
        y : (n,) class labels (binary, or multi-class fitted one-vs-rest) or an (n, L) 0/1
            indicator matrix (multi-label).
        sample_weight : (n,) or (n, L), optional
            Per-row (or per-row-and-label) weights; 0 leaves a row out of that label's fit.

        Returns
        -------
        self
        """
        _check_C(self.C)
        X = _fit_matrix(X, y)
        T = self._targets(np.asarray(y))  # (n, L) in {0, 1}
        n, d = X.shape
        if T.shape[0] != n:
            raise ValueError(f"X has {n} rows but y has {T.shape[0]}")
        W = _sample_weights(sample_weight, T.shape)
        W = W * self._class_weights(T, W)
        # Matrix-vector products are memory-bound: extra BLAS threads only add wake-up latency
        # (10x slower on a busy 2-core machine), so L-BFGS runs with one.
        with threadpool_limits(limits=1, user_api="blas"):
            self.estimators_ = [self._fit_one(X, T[:, j], W[:, j]) for j in range(T.shape[1])]
        coefs, biases = zip(*(_raw_weights(p) for p in self.estimators_), strict=True)
        self.coef_ = np.vstack(coefs)  # (L, d)
        self.intercept_ = np.array(biases)  # (L,)
        self.n_iter_ = np.array([int(p[-1].n_iter_[0]) for p in self.estimators_])
        self.n_features_in_ = d
        return self

    def _fit_one(self, X: np.ndarray, t: np.ndarray, w: np.ndarray) -> Pipeline:
        keep = w > 0
        if not keep.all():  # unsure rows (weight 0) must not move even the scaler
            X, t, w = X[keep], t[keep], w[keep]
        reg = LogisticRegression(C=float(self.C), max_iter=self.max_iter, tol=self.tol)
        pipe = make_pipeline(StandardScaler(), reg) if self.standardize else make_pipeline(reg)
        # Only the regression is weighted. The scaler just conditions the problem, and the weak
        # negatives are random windows whose moments are the archive's; its weighted fit is
        # NaN-aware and took longer than the whole regression on 10 k x 1536.
        fit_params = {f"{pipe.steps[-1][0]}__sample_weight": w}
        # X was checked for NaN and infinity once (_as_matrix): no step need scan it again.
        with warnings.catch_warnings(), config_context(assume_finite=True):
            # The probe is judged by its cross-validated metrics, not by the optimiser's gradient
            # norm: stopping at max_iter is expected, and a warning per fold would flood the CLI.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return pipe.fit(X, t.astype(int), **fit_params)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            msg = "A column-vector y was passed when a 1d array was expected: read as (n,) labels"
            warnings.warn(msg, DataConversionWarning, stacklevel=3)
            y = y[:, 0]  # a column of class labels, not a one-label indicator matrix
        kind = type_of_target(y)
        if kind.startswith("continuous"):
            raise ValueError(f"y must hold class labels, got {kind} values")
        if y.ndim == 2:
            self._mode = "multilabel"
            self.classes_ = np.arange(y.shape[1])
            if not np.isin(y, (0, 1)).all():
                raise ValueError("a 2-D y must be a 0/1 indicator matrix")
            return y.astype(np.float64)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"need at least two classes to fit a probe, got 1 class: {classes.tolist()}"
            )
        self.classes_ = classes
        if len(classes) == 2:
            self._mode = "binary"
            return (y == classes[1]).astype(np.float64)[:, None]
        self._mode = "multiclass"
        return (y[:, None] == classes[None, :]).astype(np.float64)

    def _class_weights(self, T: np.ndarray, W: np.ndarray) -> np.ndarray:
        cw = self.class_weight
        if cw is None:
            return np.ones((1, T.shape[1]))
        if cw == "balanced":
            pos = (W * T).sum(0)
            neg = (W * (1 - T)).sum(0)
            total = pos + neg
            w_pos = np.where(pos > 0, total / (2 * np.maximum(pos, 1e-12)), 1.0)
            w_neg = np.where(neg > 0, total / (2 * np.maximum(neg, 1e-12)), 1.0)
            return T * w_pos + (1 - T) * w_neg
        if isinstance(cw, dict) and self._mode == "binary":
            c0, c1 = self.classes_
            return T * cw.get(c1, 1.0) + (1 - T) * cw.get(c0, 1.0)
        if isinstance(cw, dict) and self._mode == "multiclass":  # each row weighs by its class
            per_class = np.array([cw.get(c, 1.0) for c in self.classes_], dtype=np.float64)
            return (T @ per_class)[:, None]  # (n, 1)
        raise ValueError(f"class_weight must be None, 'balanced' or a dict of classes, got {cw!r}")

    # -- prediction ----------------------------------------------------------------------------
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits: (n,) for binary problems, (n, L) otherwise."""
        check_is_fitted(self, "coef_")
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but LinearProbe is expecting "
                f"{self.n_features_in_} features as input"
            )
        z = X @ self.coef_.T.astype(np.float64) + self.intercept_  # (n, L)
        return z[:, 0] if self._mode == "binary" else z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities.

        Binary: (n, 2) [P(classes_[0]), P(classes_[1])]; multi-label: (n, L) per-label
        probabilities; multi-class: (n, K) one-vs-rest probabilities normalised per row.
        """
        p = expit(self.decision_function(X))
        if self._mode == "binary":
            return np.column_stack([1 - p, p])
        if self._mode == "multiclass":
            return p / p.sum(1, keepdims=True)
        return p

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels (n,), or an (n, L) 0/1 matrix for multi-label probes."""
        z = self.decision_function(X)
        if self._mode == "binary":
            return self.classes_[(z > 0).astype(int)]
        if self._mode == "multiclass":
            return self.classes_[z.argmax(1)]
        return (z > 0).astype(int)

    def positive_scores(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive class(es): (n,) binary, (n, L) otherwise."""
        return expit(self.decision_function(X))

    @classmethod
    def from_weights(cls, coef: np.ndarray, intercept: np.ndarray, classes=None) -> LinearProbe:
        """Rebuild a fitted probe from stored ``coef_`` (L, d) and ``intercept_`` (L,)."""
        probe = cls()
        probe.coef_ = np.asarray(coef, dtype=np.float64).reshape(len(intercept), -1)
        probe.intercept_ = np.asarray(intercept, dtype=np.float64)
        probe.n_features_in_ = probe.coef_.shape[1]
        probe.estimators_ = []
        if probe.coef_.shape[0] == 1:
            probe._mode, probe.classes_ = "binary", np.array([0, 1])
        else:
            probe._mode, probe.classes_ = "multilabel", np.arange(probe.coef_.shape[0])
        if classes is not None:
            probe.classes_ = np.asarray(classes)
        return probe


def _raw_weights(pipe: Pipeline) -> tuple[np.ndarray, float]:
    """(d,) weights and bias of a fitted pipeline in raw feature space.

    (x - mean) / scale @ w + b = x @ (w / scale) + (b - mean @ (w / scale)).
    """
    reg = pipe[-1]
    w = reg.coef_[0].astype(np.float64)
    b = float(reg.intercept_[0])
    if len(pipe) == 1:
        return w, b
    scaler = pipe[0]
    raw = w / scaler.scale_
    return raw, b - float(scaler.mean_ @ raw)


def _as_matrix(X, chunk: int = 65536) -> np.ndarray:
    if issparse(X):
        raise TypeError("sparse X is not supported: embeddings are dense, pass a NumPy array")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, dim), got shape {X.shape}: Reshape your data")
    X = X if X.dtype in (np.float32, np.float64) else X.astype(np.float32)
    for i in range(0, len(X), chunk):  # in chunks: no mask as large as an archive's vectors
        bad = ~np.isfinite(X[i : i + chunk]).all(1)
        if bad.any():
            raise ValueError(f"X row {i + int(np.argmax(bad))} holds NaN or infinity")
    return X


def _sample_weights(sample_weight, shape: tuple[int, int]) -> np.ndarray:
    if sample_weight is None:
        return np.ones(shape)
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.ndim == 1:
        sw = np.repeat(sw[:, None], shape[1], axis=1)  # (n, L)
    if sw.shape != shape or not (sw >= 0).all() or not np.isfinite(sw).all():
        raise ValueError(f"sample_weight must be non-negative, shape ({shape[0]},) or {shape}")
    if not (sw.sum(0) > 0).all():
        raise ValueError("the sample weights of a label sum to zero: nothing to fit")
    return sw


def _check_C(C: float) -> None:
    if not (math.isfinite(C) and C > 0):
        raise ValueError(f"C must be a positive number, got {C}")


def _fit_matrix(X, y) -> np.ndarray:
    """X (n, d) for fitting, with scikit-learn's messages for what cannot be fitted."""
    if y is None:
        raise ValueError("LinearProbe requires y to be passed, but the target y is None")
    X = _as_matrix(X)
    if X.shape[0] == 0 or X.shape[1] == 0:
        what = "sample" if X.shape[0] == 0 else "feature"
        raise ValueError(
            f"Found array with 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    return X


@dataclass
class ProbeFit:
    """A fitted probe with its cross-validated evaluation (one entry per label)."""

    probe: LinearProbe
    labels: list[str]
    thresholds: list[float]
    metrics: list[dict]


def fit_and_evaluate(
    X: np.ndarray,
    Y: np.ndarray,
    weights: np.ndarray,
    groups: np.ndarray,
    labels: list[str],
    strong: np.ndarray,
    precision: float | None = None,
    C: float = DEFAULT_C,
    class_weight: str | None = "balanced",
    n_splits: int = 5,
    seed: int = 0,
) -> ProbeFit:
    """Grouped CV then a final fit on everything.

    Parameters
    ----------
    X : (n, d) vectors; Y : (n, L) 0/1 targets; weights : (n, L) sample weights.
    groups : (n,) recording ids. strong : (n, L) bool, True where the target is a user label
        (metrics use those rows; weak negatives join only when the labels hold no negatives).
    precision : float, optional
        Choose each label's threshold for this precision on the out-of-fold scores; otherwise
        the threshold maximising F1.

    Returns
    -------
    ProbeFit
        Each label's metrics also hold the CV scheme, every test fold's recordings / positives /
        negatives, a bootstrap interval of the average precision over recordings, whether the
        figures are too uncertain to trust, and whether the target precision was reached.
    """
    Y = np.asarray(Y).reshape(len(X), -1)
    groups = np.asarray(groups)

    def make():
        return LinearProbe(C=C, class_weight=class_weight)

    folds = grouped_folds(Y, groups, n_splits, seed)
    oof = cross_val_scores(make, X, Y, groups, weights, folds=folds).reshape(Y.shape)
    thresholds, metrics = [], []
    for j in range(Y.shape[1]):
        labelled_only = bool((strong[:, j] & (Y[:, j] == 0)).any())
        rows = strong[:, j] if labelled_only else weights[:, j] > 0
        y, s = Y[rows, j], oof[rows, j]
        choice = choose_threshold(y, s, precision)
        m = evaluate(y, s, choice.threshold)
        m.update(
            eval_rows="labelled" if labelled_only else "labelled+weak",
            cv_scheme=cv_scheme(folds, Y, groups),
            folds=fold_summary(folds, Y[:, j], groups, rows),
            target_precision=precision,
            target_reached=choice.reached,
        )
        judge_uncertainty(m, y, s, groups[rows], seed)
        thresholds.append(choice.threshold)
        metrics.append(m)
    probe = make().fit(X, Y if Y.shape[1] > 1 else Y[:, 0], sample_weight=weights)
    return ProbeFit(probe, list(labels), thresholds, metrics)


# -- database layer: training sets and the probes table --------------------------------------
PROBES_TABLE = "probes"
WEAK_WEIGHT = 0.05  # sample weight of a random unlabelled window used as a negative
WEAK_PER_LABELLED = 10  # weak negatives drawn per labelled window ...
WEAK_MIN, WEAK_MAX = 1000, 20_000  # ... within these bounds
MIN_POSITIVES = 2  # fewer positive windows than this: no probe (see check_enough_examples)
MIN_NEGATIVES = 2  # ... nor with fewer negative and weak-negative windows together


class TooFewExamples(ValueError):
    """A label has too few positive or negative windows to train a probe on."""


PROBES_SCHEMA = pa.schema(
    [
        pa.field("probe_id", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.string()), nullable=False),
        pa.field("dim", pa.int32(), nullable=False),
        pa.field("weights", pa.list_(pa.float32()), nullable=False),  # (L * dim,) row-major coef_
        pa.field("bias", pa.list_(pa.float64()), nullable=False),  # (L,) intercept_
        pa.field("thresholds", pa.list_(pa.float64()), nullable=False),  # (L,) on probabilities
        pa.field("metrics", pa.string()),  # json: per-label cross-validated metrics
        pa.field("training", pa.string()),  # json: training-set summary (label ids, versions)
        pa.field("params", pa.string()),  # json: fit parameters
        pa.field("created_at", pa.timestamp("us"), nullable=False),
    ]
)


@dataclass
class TrainingSet:
    """Rows used to fit a probe: X (n, d), Y (n, L), weights (n, L), strong (n, L), groups (n,)."""

    window_ids: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    weights: np.ndarray
    strong: np.ndarray
    groups: np.ndarray
    summary: dict


def training_set(
    db,
    model: str,
    labels: list[str],
    weak_weight: float = WEAK_WEIGHT,
    n_weak: int | None = None,
    min_overlap: float = 0.5,
    seed: int = 0,
) -> TrainingSet:
    """Windows under positive/negative labels plus random unlabelled windows as weak negatives.

    A window labelled for one name but not another is a weak negative for the other; windows
    under an ``unsure`` label get weight 0 for that label and are never drawn as weak negatives.
    """
    from index.labels import labels_table, window_labels

    snap = db.snapshot(model)
    per_label = [window_labels(db, model, name, min_overlap) for name in labels]
    for name, wl in zip(labels, per_label, strict=True):
        if not (wl["kind"] == "positive").any():
            raise ValueError(f"no {model!r} windows under a positive {name!r} label")
    labelled = np.unique(np.concatenate([wl["window_id"].to_numpy() for wl in per_label]))
    rng = np.random.default_rng(seed)
    free = np.setdiff1d(snap.window_id, labelled)
    if n_weak is None:
        n_weak = int(np.clip(WEAK_PER_LABELLED * len(labelled), WEAK_MIN, WEAK_MAX))
    n_weak = min(n_weak, len(free)) if weak_weight > 0 else 0
    weak = np.sort(rng.choice(free, n_weak, replace=False)) if n_weak else free[:0]
    ids = np.concatenate([labelled, weak])  # (n,)
    Y = np.zeros((len(ids), len(labels)))
    W = np.full((len(ids), len(labels)), float(weak_weight))
    strong = np.zeros((len(ids), len(labels)), dtype=bool)
    pos = {int(w): i for i, w in enumerate(ids)}
    summary = {"model": model, "labels": list(labels), "n_weak": int(n_weak)}
    for j, wl in enumerate(per_label):
        rows = wl["window_id"].map(pos).to_numpy()
        target = wl["target"].to_numpy()
        unsure = np.isnan(target)
        Y[rows[~unsure], j] = target[~unsure]
        W[rows, j] = np.where(unsure, 0.0, 1.0)
        strong[rows[~unsure], j] = True
        summary[labels[j]] = {
            "n_positive": int((target == 1).sum()),
            "n_negative": int((target == 0).sum()),
            "n_unsure": int(unsure.sum()),
            "label_ids": sorted(int(x) for x in wl["label_id"].unique()),
        }
    for j, name in enumerate(labels):
        check_enough_examples(name, Y[:, j], W[:, j], strong[:, j])
    offsets = snap.offsets(ids)
    summary.update(
        weak_weight=float(weak_weight),
        min_overlap=float(min_overlap),
        seed=int(seed),
        n_recordings=int(len(np.unique(snap.recording_id[offsets]))),
        windows_version=int(snap.version),
        labels_version=int(labels_table(db).version),
    )
    return TrainingSet(
        ids, snap.vectors_at(offsets), Y, W, strong, snap.recording_id[offsets], summary
    )


def check_enough_examples(label: str, y: np.ndarray, w: np.ndarray, strong: np.ndarray) -> None:
    """Refuse, in one line that says what to label next, a label with too few examples.

    A probe from one positive and no negatives still stores and scores (ROC-AUC 0.25, every
    window flagged): below ``MIN_POSITIVES`` positives or ``MIN_NEGATIVES`` negatives and weak
    negatives together, nothing useful can be learnt.
    """
    used = w > 0  # unsure rows (weight 0) teach nothing
    n_pos = int((used & (y == 1)).sum())
    n_neg = int((used & (y == 0) & strong).sum())
    n_weak = int((used & (y == 0) & ~strong).sum())
    todo = []
    if n_pos < MIN_POSITIVES:
        todo.append(f"{MIN_POSITIVES - n_pos} more positive window(s)")
    if n_neg + n_weak < MIN_NEGATIVES:
        todo.append(
            f"{MIN_NEGATIVES - n_neg - n_weak} more negative window(s) (or allow weak negatives)"
        )
    if todo:
        raise TooFewExamples(
            f"too few examples to train {label!r}: {n_pos} positive, {n_neg} negative and "
            f"{n_weak} weak-negative windows (a probe needs {MIN_POSITIVES} positives and "
            f"{MIN_NEGATIVES} negatives or weak negatives); label {' and '.join(todo)} next"
        )


@dataclass
class ProbeRecord:
    """A stored probe: the fitted estimator and what is needed to reproduce and judge it."""

    probe_id: int
    model: str
    labels: list[str]
    probe: LinearProbe
    thresholds: list[float]
    metrics: list[dict]
    training: dict
    params: dict

    def label_index(self, label: str | None) -> int:
        """Column of ``label`` in the probe's outputs (None: the first); KeyError naming the
        probe's labels when it has no such label."""
        if label is None:
            return 0
        if label not in self.labels:
            raise KeyError(
                f"probe {self.probe_id} has no label {label!r} (it has {', '.join(self.labels)})"
            )
        return self.labels.index(label)

    def threshold_for(self, precision: float, label: int = 0) -> float:
        """Threshold reaching ``precision`` on the cross-validated precision-recall curve."""
        return self.threshold_choice(precision, label).threshold

    def threshold_choice(self, precision: float, label: int = 0) -> ThresholdChoice:
        """Threshold for ``precision`` with the precision and recall it gives (``reached`` is
        False, and ``note`` says so, when the cross-validated curve never gets there)."""
        curve = self.metrics[label].get("pr_curve")
        if not curve:
            raise ValueError(f"probe {self.probe_id} has no cross-validated precision-recall curve")
        return choice_from_curve(curve, precision)


def train_probe(
    db,
    model: str,
    labels: str | list[str],
    weak_weight: float = WEAK_WEIGHT,
    n_weak: int | None = None,
    precision: float | None = None,
    C: float = DEFAULT_C,
    min_overlap: float = 0.5,
    n_splits: int = 5,
    seed: int = 0,
    store: bool = True,
) -> ProbeRecord:
    """Fit a probe for ``labels`` on ``model``'s windows, cross-validate it, store it.

    The threshold of each label is chosen on out-of-fold scores: for ``precision`` if given,
    else at the best F1 (metrics say when the target is unreachable). Cross-validation needs
    labelled windows in two recordings or more; with fewer the probe is still fitted and stored,
    and its metrics say why they are missing.

    Raises
    ------
    TooFewExamples
        A label has fewer than ``MIN_POSITIVES`` positive windows, or fewer than
        ``MIN_NEGATIVES`` negative and weak-negative windows together: nothing is stored, and
        the message says what to label next.
    """
    labels = [str(x).strip() for x in ([labels] if isinstance(labels, str) else labels)]
    _check_C(C)
    if precision is not None and not 0 < precision <= 1:
        raise ValueError(f"precision must be in (0, 1], got {precision}")
    if not (math.isfinite(weak_weight) and weak_weight >= 0):
        raise ValueError(f"the weak-negative weight must be >= 0, got {weak_weight}")
    ts = training_set(db, model, labels, weak_weight, n_weak, min_overlap, seed)
    params = {"C": C, "class_weight": "balanced", "precision": precision, "n_splits": n_splits}
    try:
        fit = fit_and_evaluate(
            ts.X,
            ts.Y,
            ts.weights,
            ts.groups,
            labels,
            ts.strong,
            precision,
            C,
            "balanced",
            n_splits,
            seed,
        )
        probe, thresholds, metrics = fit.probe, fit.thresholds, fit.metrics
    except ValueError as err:  # too few recordings for grouped CV
        Y = ts.Y if len(labels) > 1 else ts.Y[:, 0]
        probe = LinearProbe(C=C, class_weight="balanced").fit(ts.X, Y, sample_weight=ts.weights)
        thresholds = [0.5] * len(labels)
        metrics = [{"cv_error": str(err), "threshold": 0.5} for _ in labels]
    rec = ProbeRecord(-1, model, labels, probe, thresholds, metrics, ts.summary, params)
    if store:
        rec.probe_id = store_probe(db, rec)
    return rec


def store_probe(db, rec: ProbeRecord) -> int:
    """Append a probe to the ``probes`` table; return its new probe_id."""
    table = db.open_table(PROBES_TABLE, PROBES_SCHEMA)
    ids = table.search().select(["probe_id"]).limit(None).to_arrow()["probe_id"].to_numpy()
    # reserved under the database's lock: two sessions training at once get distinct ids
    probe_id = db.reserve_ids("next_probe_id", "all", int(ids.max()) + 1 if len(ids) else 1, 1)
    coef = np.asarray(rec.probe.coef_, dtype=np.float32)  # (L, d)
    row = {
        "probe_id": [probe_id],
        "model": [rec.model],
        "labels": [rec.labels],
        "dim": [coef.shape[1]],
        "weights": [coef.ravel()],
        "bias": [np.asarray(rec.probe.intercept_, dtype=np.float64)],
        "thresholds": [[float(t) for t in rec.thresholds]],
        "metrics": [json.dumps(rec.metrics)],
        "training": [json.dumps(rec.training)],
        "params": [json.dumps(rec.params)],
        "created_at": [_dt.datetime.now().replace(microsecond=0)],
    }
    table.add(pa.table(row, schema=PROBES_SCHEMA))
    return probe_id


def load_probe(db, probe_id: int) -> ProbeRecord:
    """A stored probe by id; KeyError if unknown."""
    table = db.open_table(PROBES_TABLE, PROBES_SCHEMA)
    rows = table.search().where(f"probe_id = {int(probe_id)}").limit(None).to_arrow().to_pylist()
    if not rows:
        raise KeyError(f"no probe with id {probe_id}")
    r = rows[0]
    coef = np.asarray(r["weights"], dtype=np.float32).reshape(len(r["labels"]), r["dim"])  # (L, d)
    probe = LinearProbe.from_weights(coef, np.asarray(r["bias"]))
    return ProbeRecord(
        int(r["probe_id"]),
        r["model"],
        list(r["labels"]),
        probe,
        list(r["thresholds"]),
        json.loads(r["metrics"] or "[]"),
        json.loads(r["training"] or "{}"),
        json.loads(r["params"] or "{}"),
    )


def list_probes(db) -> pd.DataFrame:
    """probe_id, model, labels, created_at, average_precision (first label), threshold."""
    table = db.open_table(PROBES_TABLE, PROBES_SCHEMA)
    cols = ["probe_id", "model", "labels", "thresholds", "metrics", "created_at"]
    df = table.search().select(cols).limit(None).to_arrow().to_pandas()
    ap = [json.loads(m or "[{}]")[0].get("average_precision") for m in df["metrics"]]
    df = df.assign(
        labels=df["labels"].map(lambda x: ",".join(x)),
        threshold=df["thresholds"].map(lambda x: float(x[0])),
        average_precision=ap,
    )
    return df.drop(columns=["metrics", "thresholds"]).sort_values("probe_id", ignore_index=True)
