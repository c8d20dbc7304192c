"""``chorus roots --db DB [--move OLD NEW]``: list the audio roots, or point one at its new place."""

from __future__ import annotations

from explorer.commands import CLIError, require_db


def add_parser(sub) -> None:
    p = sub.add_parser("roots", help="list a database's audio roots, or move one (--move OLD NEW)")
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument(
        "--move",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="the archive at root OLD now lives at NEW (a renamed drive, a copied archive)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from index.lock import DatabaseBusy
    from index.roots import move_root, root_summary

    db = index.connect(require_db(args.db), create=False)
    if args.move:
        try:
            with db.writer_lock(wait_s=5):
                n = move_root(db, *args.move)
        except (ValueError, DatabaseBusy) as err:
            raise CLIError(str(err)) from None
        print(f"moved {n} recordings from {args.move[0]} to {args.move[1]}")
        return 0
    for row in root_summary(db).itertuples():
        state = "" if row.present else "  (missing: moved? `chorus roots --move OLD NEW`)"
        print(f"{row.root}  {row.recordings} recordings{state}")
    return 0
