"""``chorus info --db DB``: what the database holds."""

from __future__ import annotations

import json

from explorer.commands import require_db


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info", help="summarise a database: recordings, hours, sites, models, failures"
    )
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument(
        "--failed",
        action="store_true",
        help="list every failed file with its error, and every damaged one with its damage",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def format_info(info: dict) -> str:
    """Human-readable lines for :meth:`index.Database.info`'s summary."""
    from index.summary import describe_dates

    lines = [
        f"database    {info['path']}",
        f"recordings  {info['n_recordings']} ({info['hours']:.2f} h), {info['n_failed']} failed"
        + (
            f", {info.get('n_pending')} not fully embedded (rerun `chorus embed`)"
            if info.get("n_pending")
            else ""
        )
        + (
            f", {info['n_partial']} damaged (embedded as far as they decode)"
            if info.get("n_partial")
            else ""
        ),
        f"sites       {', '.join(map(str, info['sites'])) or '-'}",
        f"dates       {describe_dates(info)}",
    ]
    for name, m in info["models"].items():
        lines.append(
            f"model       {name}: {m['n_windows']} windows from {m['n_recordings_done']} recordings; "
            f"index {m['index']}"
        )
    return "\n".join(lines)


def run(args) -> int:
    import index

    db = index.connect(require_db(args.db))
    info = db.info()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(format_info(info))
    for kind, key in (("failed", "error"), ("partial", "damage")):
        rows = info.get(kind, [])
        for row in rows if args.failed else rows[:5]:
            print(f"  {kind}: {row['path']}: {_short(row[key], row['path'])}")
        if not args.failed and len(rows) > 5:
            print(f"  … {len(rows) - 5} more {kind} (chorus info --failed)")
    return 0


def _short(message: str, path: str) -> str:
    """An error without the path and kind it starts with (the line names both already)."""
    return str(message).removeprefix(f"{path}: ").removeprefix("partial: ")
