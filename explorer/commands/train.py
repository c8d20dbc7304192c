"""``chorus train``: fit a linear probe on labelled windows and print cross-validated metrics."""

from __future__ import annotations

from explorer.commands import CLIError, require_db


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a linear probe for a label; prints CV metrics")
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--model", default=None, help="embeddings to use (default: the first model)")
    p.add_argument(
        "--label", action="append", required=True, help="label to learn (repeat: multi-label probe)"
    )
    p.add_argument(
        "--weak-negatives",
        type=float,
        default=0.05,
        metavar="WEIGHT",
        help="weight of random unlabelled windows used as negatives (0 = none; default 0.05)",
    )
    p.add_argument("--n-weak", type=int, default=None, help="how many weak negatives to draw")
    p.add_argument(
        "--precision",
        type=float,
        default=None,
        help="choose the threshold for this cross-validated precision (default: best F1)",
    )
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation")
    p.add_argument("--min-overlap", type=float, default=0.5, help="label/window overlap fraction")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from explorer.commands.search import pick_model
    from index.probe import train_probe

    db = index.connect(require_db(args.db))
    model = pick_model(db, args.model)
    if args.weak_negatives < 0:
        raise CLIError("--weak-negatives must be >= 0")
    try:
        rec = train_probe(
            db,
            model,
            args.label,
            weak_weight=args.weak_negatives,
            n_weak=args.n_weak,
            precision=args.precision,
            C=args.C,
            min_overlap=args.min_overlap,
            seed=args.seed,
        )
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    print(format_metrics(rec))
    print(
        f"probe {rec.probe_id} stored (model {model}); score the archive with "
        f"`chorus classify --db {args.db} --probe {rec.probe_id}`"
    )
    return 0


def format_metrics(rec) -> str:
    """Per label: counts and cross-validated metrics, then how the folds looked and whether the
    figures (and the target precision) hold."""
    from index.probe_eval import describe_cv, target_note

    lines = []
    for name, m in zip(rec.labels, rec.metrics, strict=True):
        t = rec.training.get(name, {})
        head = (
            f"{name}: {t.get('n_positive', 0)} positive, {t.get('n_negative', 0)} negative, "
            f"{rec.training.get('n_weak', 0)} weak-negative windows"
        )
        if "cv_error" in m:
            lines.append(f"{head}; no cross-validation ({m['cv_error']})")
            continue

        def fmt(x):
            return "n/a" if x is None else f"{x:.3f}"

        lines.append(
            f"{head}; grouped CV ({m.get('eval_rows')}): AP {fmt(m['average_precision'])}, "
            f"ROC-AUC {fmt(m['roc_auc'])}, at threshold {m['threshold']:.3f}: precision "
            f"{fmt(m['precision'])}, recall {fmt(m['recall'])}"
        )
        lines += [f"  {x}" for x in (describe_cv(m), target_note(name, m)) if x]
    return "\n".join(lines)
