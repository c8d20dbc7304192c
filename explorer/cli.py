"""The ``chorus`` command line: one verb per job, each a thin layer over a documented function.

Every verb lives in ``explorer/commands/<verb>.py`` and exposes ``add_parser(subparsers)`` and
``run(args) -> int``. Verbs are imported lazily so that ``chorus --help`` does not import torch.
Exit codes: 0 success, 1 failure, 2 bad usage (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from explorer.commands import CLIError

# Order is the order shown by ``chorus --help``.
COMMANDS = (
    "embed",
    "search",
    "label",
    "train",
    "classify",
    "review",
    "density",
    "activity",
    "cluster",
    "export",
    "info",
    "check",
    "roots",
    "models",
    "explore",
    "demo",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every other usage error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chorus", description="Embedding database and explorer for field recordings."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = _command_module(name)
        if module is not None:
            module.add_parser(sub)
    return parser


def _command_module(name: str):
    try:
        return importlib.import_module(f"explorer.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"explorer.commands.{name}":
            return None  # verb not built yet in this checkout
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chorus`` console script."""
    # torch's OpenMP spin-waiting makes CPU inference erratic on shared machines.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    try:
        _say_where_a_moved_db_reads(args)
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"chorus {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `chorus label --list | head`: the reader has all it wanted
        _silence_stdout()
        return 0
    except OSError as err:  # a path the user gave that cannot be read or written
        where = f"{err.filename}: " if err.filename else ""
        print(f"chorus {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as err:
        line = _damage_line(err)
        if line is None:
            raise
        print(f"chorus {args.command}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"chorus {args.command}: interrupted", file=sys.stderr)
        return 130


def _say_where_a_moved_db_reads(args) -> None:
    """A database opened away from where it was written: one line naming the roots it reads."""
    if isinstance(getattr(args, "db", None), str):
        from index.roots import opened_elsewhere

        note = opened_elsewhere(args.db)
        if note is not None:
            print(f"chorus {args.command}: {note}", file=sys.stderr)


def _damage_line(err: Exception) -> str | None:
    """One line for a damaged database (None: not that kind of error, let it surface)."""
    db_errors = sys.modules.get("index.db")  # loaded whenever one of its errors was raised
    if db_errors is not None and isinstance(err, db_errors.DatabaseError):
        return str(err)
    text = str(err).splitlines()[0] if str(err) else ""
    if text.startswith("lance error") or "was not found" in text and "Table" in text:
        return f"the database is damaged ({text[:160]}): see `chorus check --db DB`"
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe does not
    print a traceback (what Python's documentation advises for SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
