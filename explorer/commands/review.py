"""``chorus review``: the agile loop without the app — the next windows to label, as a CSV.

One round: ``chorus review --probe ID --batch 12 --out round.csv`` writes candidates with a
``kind`` column set to ``skip``; edit it to positive / negative / unsure (rows left at ``skip`` are
not labels), then ``chorus label --import round.csv`` stores them and ``chorus train`` retrains.
"""

from __future__ import annotations

import sys

from explorer.commands import CLIError, check_out_file, require_db

STRATEGIES = ("margin", "top", "diverse")
COLUMNS = ["path", "start_s", "end_s", "score", "label", "kind"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "review", help="next windows to label for a probe (CSV that `chorus label --import` reads)"
    )
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--probe", type=int, required=True, metavar="ID", help="probe id (chorus train)")
    p.add_argument(
        "--strategy",
        default="margin",
        choices=STRATEGIES,
        help="margin: closest to the threshold; top: highest scores; diverse: spread over the "
        "likely positives (default margin)",
    )
    p.add_argument("--batch", type=int, default=12, help="windows per round (default 12)")
    p.add_argument("--label", default=None, help="which of the probe's labels (default: first)")
    p.add_argument("--out", default=None, metavar="FILE.csv", help="write the round here")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from index.classify import review_queue
    from index.labels import list_labels
    from index.probe import load_probe

    out = check_out_file(args.out)
    if out is not None and out.suffix.lower() != ".csv":
        raise CLIError(f"--out must end in .csv, got {out.name}")
    if args.batch < 1:
        raise CLIError("--batch must be >= 1")
    db = index.connect(require_db(args.db))
    try:
        rec = load_probe(db, args.probe)
        label = args.label or rec.labels[0]
        q = review_queue(db, args.probe, args.strategy, args.batch, label, seed=args.seed)
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    table = q.assign(label=label, kind="skip")[COLUMNS]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    else:
        table.to_csv(sys.stdout, index=False)
    print(round_summary(rec, label, list_labels(db, label=label)), file=sys.stderr)
    if out is not None:
        print(
            f"wrote {len(table)} candidates to {out}: set kind to positive/negative/unsure "
            f"(skip = not a label), then `chorus label --db {args.db} --import {out}` and "
            f"`chorus train --db {args.db} --label {label}`",
            file=sys.stderr,
        )
    return 0


def round_summary(rec, label: str, labels) -> str:
    """The running count of labels and the probe's cross-validated figure, in one line."""
    counts = labels["kind"].value_counts()
    m = rec.metrics[rec.labels.index(label)] if label in rec.labels else {}
    ap = m.get("average_precision")
    cv = f"CV AP {ap:.3f}" if ap is not None else "no CV figure"
    if m.get("uncertain"):
        cv += " (too uncertain to trust)"
    return (
        f"{label}: {counts.get('positive', 0)} positive, {counts.get('negative', 0)} negative, "
        f"{counts.get('unsure', 0)} unsure labels; probe {rec.probe_id}: {cv}"
    )
