"""``chorus info --db DB``: what the database holds."""

from __future__ import annotations

import json

from explorer.commands import require_db


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info", help="summarise a database: recordings, hours, sites, models, failures"
    )
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--failed", action="store_true", help="list every failed file with its error")
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
    failed = info.get("failed", [])
    for row in failed if args.failed else failed[:5]:
        print(f"  failed: {row['path']}: {row['error']}")
    if not args.failed and len(failed) > 5:
        print(f"  … {len(failed) - 5} more (chorus info --failed)")
    return 0
