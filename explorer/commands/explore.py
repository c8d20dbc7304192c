"""``chorus explore``: start the Streamlit explorer on a database, bound to localhost by default."""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from explorer.commands import require_db

APP_MAIN = Path(__file__).resolve().parent.parent / "app" / "main.py"
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"  # never listen on other interfaces unless asked
MAX_UPLOAD_MB = 50  # Streamlit upload limit (MB); the app also checks query clip length


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explore",
        help="open the Streamlit explorer on a database",
        description="Start the Streamlit explorer (maps, search, probes, clusters) on a database.",
    )
    p.add_argument("--db", required=True, help="database folder (e.g. survey.chorus)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default %(default)s: this machine only)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=MAX_UPLOAD_MB,
        help="largest query clip upload in MB (default %(default)s)",
    )
    p.set_defaults(func=run)


def _port(text: str) -> int:
    """A TCP port number 1-65535 (argparse type: a bad one is a one-line usage error)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be a number from 1 to 65535, got {text!r}")
    return port


def streamlit_command(
    db: str | Path,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    max_upload_mb: int = MAX_UPLOAD_MB,
) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the explorer on ``db``."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_MAIN),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.maxUploadSize",
        str(max_upload_mb),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--server.fileWatcherType",
        "none",
        "--",
        "--db",
        str(Path(db).resolve()),
    ]


def host_warning(host: str) -> str | None:
    """A warning line when ``host`` lets other machines in (the explorer has no login), else None."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return None
    try:
        if ipaddress.ip_address(name).is_loopback:
            return None
    except ValueError:  # a host name other than localhost: it may resolve to any interface
        pass
    return (
        f"warning: --host {host} serves the explorer beyond this machine, and it has no "
        "authentication: anyone who reaches the port can listen to the audio and change labels"
    )


def run(args: argparse.Namespace) -> int:
    db = require_db(args.db)
    cmd = streamlit_command(db, args.port, args.host, args.max_upload_mb)
    warning = host_warning(args.host)
    if warning is not None:
        print(f"chorus explore: {warning}", file=sys.stderr)
    print(f"Chorus explorer on http://{args.host}:{args.port}  (database {db}; Ctrl-C to stop)")
    sys.stdout.flush()
    if os.name == "posix":
        # Become Streamlit, so signals (Ctrl-C, a supervisor's SIGTERM) reach the server itself
        # and no orphaned server keeps the port.
        os.execv(cmd[0], cmd)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
