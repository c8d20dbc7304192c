"""LinearProbe (scikit-learn pipelines per label), grouped cross-validation, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from index.probe import (
    LinearProbe,
    cross_val_scores,
    cv_scheme,
    evaluate,
    fit_and_evaluate,
    fold_summary,
    grouped_folds,
    threshold_for_precision,
    threshold_from_curve,
)


def _data(n=1500, d=48, seed=0, noise=2.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 3.0  # offset: the intercept matters
    w = rng.normal(size=d)
    y = ((X - 3.0) @ w + noise * rng.normal(size=n) > 1.0).astype(int)
    return X, y, rng.uniform(0.05, 1.0, n)


def test_matches_sklearn_logistic_regression_raw_features():
    X, y, sw = _data()
    ours = LinearProbe(standardize=False, max_iter=2000, tol=1e-10).fit(X, y, sample_weight=sw)
    ref = LogisticRegression(C=1.0, max_iter=2000, tol=1e-10).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4)
    assert (ours.predict(X) == ref.predict(X)).mean() > 0.999
    assert ours.classes_.tolist() == [0, 1]


def test_matches_sklearn_on_standardised_features_with_string_classes():
    X, y, sw = _data(seed=1)
    names = np.array(["noise", "owl"])[y]
    ours = LinearProbe(C=0.1, max_iter=2000, tol=1e-10).fit(X, names, sample_weight=sw)
    Xs = StandardScaler().fit(X).transform(X)  # unweighted, as ours (only the regression is)
    ref = LogisticRegression(C=0.1, max_iter=2000, tol=1e-10).fit(Xs, names, sample_weight=sw)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Xs), atol=1e-5)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(Xs), atol=1e-4)
    assert ours.classes_.tolist() == ["noise", "owl"]
    assert set(ours.predict(X)) <= {"noise", "owl"}


def test_float32_input_close_to_float64():
    X, y, _ = _data(seed=2)
    p64 = LinearProbe().fit(X, y).predict_proba(X)
    p32 = LinearProbe().fit(X.astype(np.float32), y).predict_proba(X)
    np.testing.assert_allclose(p32, p64, atol=2e-3)


def test_multilabel_one_vs_rest_equals_separate_binary_fits():
    X, y1, _ = _data(seed=3)
    _, y2, _ = _data(seed=4)
    Y = np.column_stack([y1, y2])
    multi = LinearProbe(max_iter=1000, tol=1e-9).fit(X, Y)
    assert multi.predict_proba(X).shape == (len(X), 2)
    assert multi.coef_.shape == (2, X.shape[1])
    for j in range(2):
        single = LinearProbe(max_iter=1000, tol=1e-9).fit(X, Y[:, j])
        np.testing.assert_allclose(
            multi.predict_proba(X)[:, j], single.predict_proba(X)[:, 1], atol=1e-4
        )
    assert multi.predict(X).shape == (len(X), 2)


def test_balanced_class_weight_counts_sample_weights():
    X, y, _ = _data(seed=5)
    sw = np.where(y == 0, 0.05, 1.0)  # many weak negatives
    # unstandardised: the moments see sample weights only, as a scaler in a pipeline would
    probe = LinearProbe(class_weight="balanced", standardize=False, max_iter=1000, tol=1e-9)
    equal = LinearProbe(standardize=False, max_iter=1000, tol=1e-9).fit(
        X,
        y,
        sample_weight=sw
        * np.where(y == 1, 0.5 * sw.sum() / sw[y == 1].sum(), 0.5 * sw.sum() / sw[y == 0].sum()),
    )
    np.testing.assert_allclose(probe.fit(X, y, sw).coef_, equal.coef_, atol=1e-5)


def test_bad_input_messages():
    X, y, _ = _data(n=20)
    with pytest.raises(ValueError, match="two classes"):
        LinearProbe().fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="has 20 rows but y has 19"):
        LinearProbe().fit(X, y[:19])
    with pytest.raises(ValueError, match="non-negative"):
        LinearProbe().fit(X, y, sample_weight=-np.ones(20))


def test_raw_space_weights_are_the_pipelines_decisions():
    # coef_ / intercept_ fold the scaler into the weights: one matrix product scores an archive
    X, y, sw = _data(seed=7)
    Y = np.column_stack([y, 1 - y])
    probe = LinearProbe(class_weight="balanced").fit(X.astype(np.float32), Y, sample_weight=sw)
    assert len(probe.estimators_) == 2
    for j, pipe in enumerate(probe.estimators_):
        np.testing.assert_allclose(
            probe.decision_function(X)[:, j], pipe.decision_function(X), rtol=1e-4, atol=1e-4
        )
    assert probe.n_iter_.shape == (2,)


def test_from_weights_reproduces_scores():
    X, y, _ = _data(seed=6)
    p = LinearProbe().fit(X, y)
    q = LinearProbe.from_weights(p.coef_.astype(np.float32), p.intercept_)
    np.testing.assert_allclose(q.predict_proba(X), p.predict_proba(X), atol=1e-4)


def test_grouped_folds_keep_recordings_on_one_side():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 23, 2000)
    y = (rng.random(2000) < 0.1).astype(int)
    folds = grouped_folds(y, groups, n_splits=5)
    assert len(folds) == 5
    seen = np.zeros(2000, int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert y[test].sum() > 0  # stratified: positives in every test fold
        seen[test] += 1
    assert (seen == 1).all()


def test_grouped_folds_need_two_recordings():
    with pytest.raises(ValueError, match="at least two recordings"):
        grouped_folds(np.array([0, 1, 0]), np.array([7, 7, 7]))


def test_cross_validation_is_honest_about_recording_leakage():
    # Each recording has its own "fingerprint" direction and a single class: a probe can memorise
    # recordings. Grouped CV must not reward that (AUC near chance); a random split would.
    rng = np.random.default_rng(0)
    n_rec, per = 40, 30
    groups = np.repeat(np.arange(n_rec), per)
    y = np.repeat(rng.integers(0, 2, n_rec), per)
    X = rng.normal(size=(n_rec, 64))[groups] + 0.3 * rng.normal(size=(n_rec * per, 64))
    oof = cross_val_scores(LinearProbe, X, y, groups)
    assert evaluate(y, oof)["roc_auc"] < 0.75


def test_few_positive_recordings_are_left_out_one_at_a_time():
    # 3 recordings hold positives, 5 only negatives: each fold tests exactly one positive one
    groups = np.repeat(np.arange(8), 20)
    y = np.zeros(160, int)
    y[groups < 3] = np.tile([1, 0, 0, 0], 15)
    folds = grouped_folds(y, groups)
    assert len(folds) == 3
    seen = np.zeros(160, int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(set(groups[test][y[test] == 1])) == 1
        seen[test] += 1
    assert (seen == 1).all()
    assert cv_scheme(folds, y, groups) == "leave-one-recording-out"
    summary = fold_summary(folds, y, groups, np.ones(160, bool))
    assert [f["positives"] for f in summary] == [5, 5, 5]
    assert sum(f["recordings"] for f in summary) == 8


def test_metrics_from_few_recordings_are_flagged_uncertain():
    rng = np.random.default_rng(1)

    def data(n_rec):
        groups = np.repeat(np.arange(n_rec), 40)
        y = (rng.random(len(groups)) < 0.25).astype(int)
        # a weak signal and a per-recording offset: scores that vary from recording to recording
        X = rng.normal(size=(len(groups), 16)) + 0.8 * y[:, None] * np.eye(16)[0]
        X += rng.normal(size=(n_rec, 16))[groups]
        return X, y, groups

    X, y, groups = data(3)
    few = fit_and_evaluate(X, y[:, None], np.ones((len(y), 1)), groups, ["owl"], y[:, None] >= 0)
    m = few.metrics[0]
    assert m["cv_scheme"] == "leave-one-recording-out" and len(m["folds"]) == 3
    assert m["uncertain"] and m["why_uncertain"] == "positives in only 3 recording(s)"
    lo, hi = m["average_precision_ci"]
    assert lo <= m["average_precision"] <= hi
    X, y, groups = data(60)
    many = fit_and_evaluate(X, y[:, None], np.ones((len(y), 1)), groups, ["owl"], y[:, None] >= 0)
    assert many.metrics[0]["cv_scheme"] == "grouped 5-fold"
    assert not many.metrics[0]["uncertain"]


def test_threshold_for_precision_and_curve():
    y = np.array([0, 0, 1, 0, 1, 1, 1, 0, 1, 1])
    s = np.arange(10) / 10
    t, p, r = threshold_for_precision(y, s, 0.8)
    assert p >= 0.8 and t == pytest.approx(0.4)  # >=0.4: 5 of 6 positive
    assert r == pytest.approx(5 / 6)
    m = evaluate(y, s, t)
    assert m["precision"] == pytest.approx(5 / 6) and m["recall"] == pytest.approx(5 / 6)
    assert threshold_from_curve(m["pr_curve"], 0.8) == pytest.approx(0.4)
    # unreachable precision: best available
    assert threshold_for_precision(y, s, 1.01)[1] == pytest.approx(1.0)


def test_fit_and_evaluate_metrics_on_separable_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 50)
    y = (rng.random(600) < 0.3).astype(int)
    X = rng.normal(size=(600, 32)) + 4.0 * y[:, None] * np.eye(32)[0]
    strong = np.ones((600, 1), bool)
    fit = fit_and_evaluate(X, y[:, None], np.ones((600, 1)), groups, ["owl"], strong, precision=0.9)
    m = fit.metrics[0]
    assert m["average_precision"] > 0.9 and m["roc_auc"] > 0.95
    assert m["precision"] >= 0.85 and m["eval_rows"] == "labelled"
    assert fit.probe.coef_.shape == (1, 32)


def test_passes_scikit_learns_estimator_checks():
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(
            LinearProbe(),
            on_fail=None,
            expected_failed_checks={
                "check_sample_weight_equivalence_on_dense_data": "by design the scaler is "
                "unweighted (a weak negative is a window of the archive); the regression is"
            },
        )
    failed = [
        (r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"
    ]
    assert not failed


def test_rows_of_weight_zero_do_not_move_the_fit():
    # unsure labels enter training with weight 0: they must not shift even the standardisation
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    junk = rng.normal(loc=5.0, scale=4.0, size=(20, 5))
    base = LinearProbe().fit(X, y)
    padded = LinearProbe().fit(
        np.vstack([X, junk]), np.r_[y, np.ones(20, int)], np.r_[np.ones(60), np.zeros(20)]
    )
    np.testing.assert_allclose(padded.coef_, base.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(padded.intercept_, base.intercept_, rtol=1e-6, atol=1e-8)


def test_non_finite_input_is_refused():
    X = np.ones((6, 3))
    X[4, 1] = np.nan
    with pytest.raises(ValueError, match="X row 4 holds NaN or infinity"):
        LinearProbe().fit(X, [0, 1, 0, 1, 0, 1])
    fitted = LinearProbe().fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="expecting 4 features"):
        fitted.predict(np.ones((2, 3)))
