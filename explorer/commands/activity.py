"""``chorus activity``: a probe's detections per site × date or site × hour, as a table."""

from __future__ import annotations

import sys

from explorer.commands import CLIError, check_out_file, require_db


def add_parser(sub) -> None:
    p = sub.add_parser("activity", help="detections per site and date/hour (CSV or Parquet table)")
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--probe", type=int, required=True, metavar="ID", help="probe id (chorus train)")
    p.add_argument(
        "--by",
        default="site,date",
        help="groups: comma-separated site, date, week, month, hour (default site,date)",
    )
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, default=None, help="probability threshold")
    thr.add_argument(
        "--precision", type=float, default=None, help="threshold for this CV precision"
    )
    thr.add_argument(
        "--stored",
        action="store_true",
        help="count the detections stored by `chorus classify` (merged events)",
    )
    p.add_argument("--label", default=None, help="which of the probe's labels (default: first)")
    p.add_argument("--out", default=None, metavar="FILE", help=".csv or .parquet (default: print)")
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from index.activity import TABLE_SUFFIXES, activity, write_table

    out = check_out_file(args.out)
    if out is not None and out.suffix.lower() not in TABLE_SUFFIXES:
        raise CLIError(f"--out must end in .csv or .parquet, got {out.name}")
    db = index.connect(require_db(args.db))
    try:
        table = activity(
            db, args.probe, args.by, args.threshold, args.precision, args.label, args.stored
        )
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    if out is None:
        print(table.drop(columns=["label", "threshold"]).to_string(index=False))
    else:
        write_table(table, out)
    thr = table["threshold"].iloc[0] if len(table) else float("nan")
    what = "stored detections" if args.stored else f"windows scoring >= {thr:.3f}"
    where = f"; wrote {out}" if out is not None else ""
    print(f"{int(table['detections'].sum())} {what} in {len(table)} groups{where}", file=sys.stderr)
    return 0
