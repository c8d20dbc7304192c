"""``chorus export``: labels or a probe's detections as CSV, Parquet or Raven selection tables."""

from __future__ import annotations

from explorer.commands import CLIError, check_out_file, require_db


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export labels or detections (csv, parquet, raven)")
    p.add_argument("--db", required=True, help="database folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--labels", action="store_true", help="export labels")
    what.add_argument("--detections", type=int, metavar="PROBE", help="export a probe's detections")
    p.add_argument("--label", default=None, help="only this label (--labels)")
    p.add_argument("--format", required=True, choices=["csv", "parquet", "raven"])
    p.add_argument("--out", required=True, help="file (csv, parquet) or folder (raven)")
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from index.export import export_detections, export_labels

    if args.format != "raven":
        check_out_file(args.out)
    db = index.connect(require_db(args.db))
    try:
        if args.labels:
            files = export_labels(db, args.out, args.format, label=args.label)
        else:
            files = export_detections(db, args.detections, args.out, args.format)
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    where = args.out if args.format != "raven" else f"{args.out}/ ({len(files)} tables)"
    print(f"wrote {where}")
    return 0
