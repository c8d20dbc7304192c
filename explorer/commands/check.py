"""``chorus check --db DB [--repair]``: read every table and index, say what is damaged."""

from __future__ import annotations

from explorer.commands import CLIError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="verify every table and index of a database; say what a rerun repairs"
    )
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument(
        "--repair",
        action="store_true",
        help="drop what cannot be read or is damaged, so that the next `chorus embed` redoes it",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from index.check import check_database

    if not Path(args.db).is_dir():
        raise CLIError(f"no Chorus database at {args.db}")
    ok, found = check_database(args.db, repair=args.repair)
    for line in ok:
        print(line)
    for finding in found:
        print(finding.line())
    left = [f for f in found if not f.repaired]
    print(
        f"{len(found)} damaged part(s)" + (f", {len(found) - len(left)} repaired" if found else "")
    )
    return 1 if left else 0
