"""``chorus demo [DIR]``: synthesise a small archive with planted calls and run the loop on it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from explorer.commands import CLIError


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="make a synthetic archive with planted calls and search it")
    p.add_argument(
        "dir",
        nargs="?",
        default=None,
        metavar="DIR",
        help="where to write it (default: a temp folder)",
    )
    p.add_argument("--model", default="spectral", help="embedding model (default: spectral)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from explorer.commands.embed import resolve_model
    from explorer.demo import CALL_TYPES, DURATION_S, RECORDINGS_PER_SITE, SITES, K, run_demo
    from explorer.ingest import IngestError

    model, weights = resolve_model(args.model, None)  # installed weights, as `chorus embed`
    if args.dir and Path(args.dir).exists() and not Path(args.dir).is_dir():
        raise CLIError(f"{args.dir} is a file: the demo writes a folder")
    if model != "spectral" and weights is None:  # before minutes of synthesis, not after
        raise CLIError(f"{model} has no installed weights: run `chorus models import {model} PATH`")
    out = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="chorus-demo-"))
    n_rec = len(SITES) * RECORDINGS_PER_SITE
    print(
        f"Synthesising {n_rec} recordings ({len(SITES)} sites × {RECORDINGS_PER_SITE} × "
        f"{DURATION_S / 60:.0f} min, 32 kHz) with planted {', '.join(CALL_TYPES)} calls in {out}"
    )
    try:
        result = run_demo(
            out, model=model, seed=args.seed, progress=not args.no_progress, weights=weights
        )
    except (IngestError, OSError) as err:
        raise CLIError(str(err)) from None
    print(f"Embedded {result.n_windows} windows with {model} in {result.seconds['embed']:.1f} s")
    print(
        f"Query by example (one planted call of each type, its own window excluded): precision@{K}"
    )
    for call_type, p in result.precision.items():
        print(f"  {call_type:<6} {p:.2f}")
    mean = sum(result.precision.values()) / len(result.precision)
    print(
        f"demo: mean precision@{K} {mean:.2f} in {result.seconds['total']:.1f} s; "
        f"database {out / 'demo.chorus'}, truth {out / 'truth.csv'}"
    )
    return 0
