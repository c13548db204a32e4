"""Options several ``ablate`` commands share, declared once: ``--tracking-uri``, ``--output``,
``--host``/``--port`` of the servers.

Command modules (:mod:`ablate.cli`, :mod:`ablate.study`, :mod:`ablate.compare`) add them with
these functions, so a flag has one spelling, one help text and one meaning everywhere.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["OUTPUT_CHOICES", "add_tracking_uri", "add_output", "add_server_address", "print_rows"]

OUTPUT_CHOICES = ("table", "json")


def add_tracking_uri(
    parser: argparse.ArgumentParser | Any, *, default: Any = None, first: str | None = None
) -> None:
    """``--tracking-uri URI``: the MLflow store.

    Args:
        parser: a parser or argument group.
        default: the value when the flag is not given (``argparse.SUPPRESS``: leave it unset,
            so that a config file's value stands).
        first: a source consulted before the environment, named in the help (e.g. "the
            file's base.tracking_uri").
    """
    chain = ", ".join(filter(None, (first, "$MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")))
    parser.add_argument(
        "--tracking-uri",
        dest="tracking_uri",
        metavar="URI",
        default=default,
        help=f"MLflow tracking URI (default: {chain})",
    )


def add_output(parser: argparse.ArgumentParser) -> None:
    """``--output table|json``: how a command prints its rows on stdout."""
    parser.add_argument(
        "--output",
        choices=OUTPUT_CHOICES,
        default="table",
        help="print an aligned table or JSON (default: table)",
    )


def add_server_address(parser: argparse.ArgumentParser, *, port: int) -> None:
    """``--host`` / ``--port`` of a server a command starts: this machine only by default."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)"
    )
    parser.add_argument("--port", type=int, default=port, help=f"port (default: {port})")


def print_rows(rows: list[dict[str, Any]], output: str) -> None:
    """Rows (dicts with the same keys) as ``--output`` asks: aligned columns or JSON."""
    if output == "json":
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(width[c]) for c in cols))
