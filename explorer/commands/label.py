"""``chorus label``: add, import, list and remove time-interval labels (see ``index.labels``)."""

from __future__ import annotations

import sys

from explorer.commands import CLIError, parse_span, require_db

LIST_COLUMNS = [
    "label_id",
    "label",
    "kind",
    "path",
    "start_s",
    "end_s",
    "low_hz",
    "high_hz",
    "source",
]


def add_parser(sub) -> None:
    p = sub.add_parser("label", help="add, import, list or remove labels (time intervals)")
    p.add_argument("--db", required=True, help="database folder")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--add", nargs=2, metavar=("FILE@START-END", "LABEL"), help="label a span of a recording"
    )
    action.add_argument(
        "--import", dest="import_", metavar="TABLE", help="Raven selection table or CSV"
    )
    action.add_argument("--list", action="store_true", help="print labels")
    action.add_argument(
        "--remove",
        type=int,
        nargs="*",
        metavar="ID",
        help="delete labels: these ids, or (with no ids) those matching --label/--kind/--source/"
        "--file",
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--negative", action="store_true", help="the span does NOT hold LABEL")
    kind.add_argument("--unsure", action="store_true", help="the span may hold LABEL")
    p.add_argument("--low-hz", type=float, default=None, help="lower frequency bound (--add)")
    p.add_argument("--high-hz", type=float, default=None, help="upper frequency bound (--add)")
    p.add_argument("--label", default=None, help="only this label (--list, --remove)")
    p.add_argument(
        "--kind",
        default=None,
        choices=["positive", "negative", "unsure"],
        help="only this kind (--list, --remove)",
    )
    p.add_argument("--file", default=None, help="only this recording (--list, --remove)")
    p.add_argument("--label-column", default=None, help="annotation column name (--import)")
    p.add_argument("--default-label", default=None, help="label for rows without one (--import)")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.25,
        help="--import: leave out rows whose Confidence column is below this (BirdNET-Analyzer's "
        "tables; default 0.25, its own); tables without that column are unaffected",
    )
    p.add_argument(
        "--source",
        default=None,
        help='who labels, default "user:<login>" (--add, --import); a filter with --remove',
    )
    p.add_argument("--format", default="table", choices=["table", "csv"], help="--list output")
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from index import labels as L
    from index.raven import AnnotationError

    db = index.connect(require_db(args.db))
    kind = "negative" if args.negative else "unsure" if args.unsure else "positive"
    try:
        if args.add:
            span = parse_span(args.add[0])
            if span.start_s is None:
                raise CLIError(f"--add needs FILE@START-END, got {args.add[0]!r}")
            lid = L.add_label(
                db,
                span.path,
                span.start_s,
                span.end_s,
                args.add[1],
                kind,
                args.low_hz,
                args.high_hz,
                args.source,
            )
            print(
                f"label {lid}: {args.add[1]} ({kind}) {span.path} {span.start_s:g}-{span.end_s:g} s"
            )
        elif args.import_:
            if not 0.0 <= args.min_confidence <= 1.0:
                raise CLIError(f"--min-confidence must be in [0, 1], got {args.min_confidence}")
            ids = L.import_annotations(
                db,
                args.import_,
                args.label_column,
                args.default_label,
                kind if (args.negative or args.unsure) else None,
                min_confidence=args.min_confidence,
            )
            print(f"imported {len(ids)} labels from {args.import_}")
        elif args.remove is not None:
            rec = L.resolve_recording(db, args.file) if args.file else None
            ids = L.remove_labels(db, args.remove, args.label, args.kind, args.source, rec)
            shown = ", ".join(map(str, ids[:20])) + (" …" if len(ids) > 20 else "")
            print(f"removed {len(ids)} label(s)" + (f": {shown}" if ids else ""))
        else:
            rec = L.resolve_recording(db, args.file) if args.file else None
            df = L.list_labels(db, label=args.label, kind=args.kind, recording_id=rec)
            df = df[LIST_COLUMNS]
            if args.format == "csv":
                df.to_csv(sys.stdout, index=False)
            elif df.empty:
                print("no labels")
            else:
                print(df.to_string(index=False))
    except (KeyError, ValueError, AnnotationError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    return 0
