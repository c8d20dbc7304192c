"""``chorus export``: labels or a probe's detections as CSV, Parquet, Raven selection tables,
Audacity label tracks or a Kaleidoscope CSV."""

from __future__ import annotations

from explorer.commands import CLIError, check_out_file, require_db

# the format names, without importing index (pandas) for `chorus --help`
FORMATS = ("csv", "parquet", "raven", "audacity", "kaleidoscope")
FOLDER_FORMATS = ("raven", "audacity")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export labels or detections (csv, parquet, raven, audacity, kaleidoscope)"
    )
    p.add_argument("--db", required=True, help="database folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--labels", action="store_true", help="export labels")
    what.add_argument("--detections", type=int, metavar="PROBE", help="export a probe's detections")
    p.add_argument("--label", default=None, help="only this label (--labels)")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument(
        "--out",
        required=True,
        help="file (csv, parquet, kaleidoscope) or folder (raven, audacity: one file per recording)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import index
    from index.export import NoDetections, export_detections, export_labels

    if args.format not in FOLDER_FORMATS:
        check_out_file(args.out)
    db = index.connect(require_db(args.db))
    try:
        if args.labels:
            files = export_labels(db, args.out, args.format, label=args.label)
        else:
            files = export_detections(db, args.detections, args.out, args.format)
    except NoDetections as err:  # a failure to find, not a usage error: exit 1, no file written
        print(f"chorus export: error: {err}", file=sys.stderr)
        return 1
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    noun = "tables" if args.format == "raven" else "label tracks"
    where = f"{args.out}/ ({len(files)} {noun})" if args.format in FOLDER_FORMATS else args.out
    print(f"wrote {where}")
    return 0
