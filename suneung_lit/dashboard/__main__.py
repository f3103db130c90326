"""``python -m suneung_lit.dashboard [--port N] [--data FILE] [--runs CSV...] [--logs DIR] [--model DIR]
[--sweep CSV]``.

Starts the Streamlit app headless (no browser is opened: on a GPU server, forward the port over SSH with
``ssh -L 8501:localhost:8501 server`` and open http://localhost:8501). Exits 2 when a given file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from suneung_lit.dashboard.app_path import APP, ARGS_VARIABLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.dashboard", description=__doc__)
    parser.add_argument("--port", type=int, default=8501, help="0: a free port the OS picks (printed at start)")
    parser.add_argument("--address", default="127.0.0.1", help="0.0.0.0 to serve other machines (default: local)")
    parser.add_argument("--data", type=Path, help="a data file to browse (and to show items from runs)")
    parser.add_argument("--runs", type=Path, nargs="+", default=[], help="probabilities.csv files with answers")
    parser.add_argument("--logs", type=Path, default=Path("lightning_logs"), help="TensorBoard log folder")
    parser.add_argument("--model", type=Path, help="a model folder whose tokenizer renders and counts prompts")
    parser.add_argument("--sweep", type=Path, help="a sweep's results.csv (python -m suneung_lit sweep)")
    return parser


def free_port(address: str) -> int:
    """A port the OS reports free on ``address`` (for ``--port 0``; printed, so a script can read it)."""
    with socket.socket() as sock:
        sock.bind((address if address != "0.0.0.0" else "", 0))
        return sock.getsockname()[1]


def streamlit_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.port", str(args.port),
        "--server.address", args.address,
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no "Deploy" button: this app is for looking, not publishing
        # No file watching: on a server the app's source does not change, and inotify limits are often low.
        "--server.fileWatcherType", "none",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(p) for p in [args.data, *args.runs, args.model, args.sweep] if p is not None and not p.exists()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("error: the dashboard needs streamlit: pip install 'suneung-lit[dashboard]'", file=sys.stderr)
        return 2
    given = {
        "data": str(args.data) if args.data else None,
        "runs": [str(p) for p in args.runs],
        "logs": str(args.logs),
        "model": str(args.model) if args.model else None,
        "sweep": str(args.sweep) if args.sweep else None,
    }
    env = {**os.environ, ARGS_VARIABLE: json.dumps(given)}
    if args.port == 0:
        args.port = free_port(args.address)
    print(f"dashboard: http://{args.address}:{args.port}  (Ctrl+C stops it)", flush=True)
    # Streamlit replaces this process, so a signal meant for the dashboard (Ctrl+C, a service manager's
    # SIGTERM) reaches the server itself rather than a parent that would leave it running.
    command = streamlit_command(args)
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
