"""``chorus density``: call density per site and time bin, from a stratified validation sample.

One round: ``chorus density --probe ID --by site,week --export todo.csv`` prints each group's
density and interval from the validations labelled so far and writes the windows still to
validate (``kind`` = ``skip``); set each to positive or negative, ``chorus label --import
todo.csv``, and run ``chorus density`` again. See ``index.density`` for the method.
"""

from __future__ import annotations

import sys

from explorer.commands import CLIError, check_out_file, require_db


def add_parser(sub) -> None:
    p = sub.add_parser(
        "density", help="call density per site/time bin with intervals (validate a sample)"
    )
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--probe", type=int, required=True, metavar="ID", help="probe id (chorus train)")
    p.add_argument(
        "--by",
        default="site,week",
        help="groups: comma-separated site, date, week, month, hour (default site,week)",
    )
    p.add_argument(
        "--per-stratum", type=int, default=10, help="validations per score stratum (default 10)"
    )
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--label", default=None, help="which of the probe's labels (default: first)")
    p.add_argument(
        "--export",
        default=None,
        metavar="FILE.csv",
        help="write the windows still to validate (for `chorus label --import`)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the validation sample")
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from index.density import call_density

    out = check_out_file(args.export)
    if out is not None and out.suffix.lower() != ".csv":
        raise CLIError(f"--export must end in .csv, got {out.name}")
    if args.per_stratum < 1:
        raise CLIError("--per-stratum must be >= 1")
    if not 0 < args.level < 1:
        raise CLIError(f"--level must be in (0, 1), got {args.level}")
    db = index.connect(require_db(args.db))
    try:
        res = call_density(
            db, args.probe, args.by, args.per_stratum, label=args.label, level=args.level,
            seed=args.seed,
        )  # fmt: skip
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    print(format_table(res.table, res.level))
    done, needed = int(res.table["validated"].sum()), int(res.table["needed"].sum())
    print(f"{res.label}: {done} of {needed} validations done", file=sys.stderr)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        res.todo.to_csv(out, index=False)
        print(
            f"wrote {len(res.todo)} windows to validate to {out}: set kind to positive or "
            f"negative (skip = not yet), then `chorus label --db {args.db} --import {out}` and "
            "run `chorus density` again",
            file=sys.stderr,
        )
    elif len(res.todo):
        print("--export FILE.csv writes the windows still to validate", file=sys.stderr)
    return 0


def format_table(table, level: float) -> str:
    """The density table as text: one line per group, the interval as ``[low, high]``."""
    if table.empty:
        return "no windows"
    by = [c for c in table.columns if c not in _VALUE_COLUMNS]
    shown = table[by].copy()
    shown["windows"] = table["windows"]
    shown["density"] = table["density"].map(lambda d: "—" if d != d else f"{d:.3f}")
    shown[f"{level:.0%} interval"] = [
        f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(table["low"], table["high"], strict=True)
    ]
    shown["validated"] = [
        f"{d}/{n}" for d, n in zip(table["validated"], table["needed"], strict=True)
    ]
    return shown.to_string(index=False)


_VALUE_COLUMNS = ("windows", "density", "low", "high", "positives", "validated", "needed")
