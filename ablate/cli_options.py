"""Options several ``ablate`` commands share, declared once: ``--tracking-uri``, ``--output``,
``--host``/``--port`` of the servers.

Command modules (:mod:`ablate.cli`, :mod:`ablate.study`, :mod:`ablate.compare`) add them with
these functions, so a flag has one spelling, one help text and one meaning everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

__all__ = ["OUTPUT_CHOICES", "option", "add_dataclass_options", "add_tracking_uri", "add_output",
           "add_server_address", "print_rows"]  # fmt: skip

OUTPUT_CHOICES = ("table", "json")


def option(
    default: Any, help: str, *, choices: tuple[str, ...] | None = None, group: str | None = None,
    metavar: str | None = None,
) -> Any:  # fmt: skip
    """A dataclass field that is also a command-line flag (see :func:`add_dataclass_options`).

    Args:
        default: the field's default (a mutable default is not allowed, as for ``field``).
        help: the flag's help text; the default is appended when it is not None or a bool.
        choices: the valid values (the flag rejects others; the dataclass should check too).
        group: the help section the flag is listed under.
        metavar: the value's placeholder in the usage line (default: the field name).
    """
    meta = {"help": help, "choices": choices, "group": group, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, *, groups: dict[str, str] | None = None,
    skip: tuple[str, ...] = (), default: Any = None,
) -> None:  # fmt: skip
    """One ``--field-name`` flag per field of the dataclass ``cls``, declared by its metadata.

    Types come from the annotations: ``bool`` becomes ``--x / --no-x``, ``int`` and ``float``
    are converted, anything else stays a string. The help text is the field's ``help`` plus
    its default.

    Args:
        cls: a dataclass whose fields were made with :func:`option` (or carry the same
            metadata: ``help``, ``choices``, ``group``, ``metavar``).
        groups: group key -> section title; fields of other groups go to the parser itself.
        skip: fields declared elsewhere (e.g. ``tracking_uri``, shared by every command).
        default: the namespace value of a flag that is not given; ``argparse.SUPPRESS``
            leaves it out, so that a config file's value stands. None: the field's default.
    """
    hints = typing.get_type_hints(cls)
    sections = {key: parser.add_argument_group(title) for key, title in (groups or {}).items()}
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        target = sections.get(f.metadata.get("group") or "", parser)
        text = f.metadata["help"]
        if f.default is not None and not isinstance(f.default, bool):
            text += f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "help": text,
                                  "default": f.default if default is None else default}
        flag = "--" + f.name.replace("_", "-")
        base = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), None)
        base = base or hints[f.name]
        if base is bool:
            target.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        elif base in (int, float):
            kwargs["type"] = base
        if "choices" not in kwargs:
            kwargs["metavar"] = f.metadata.get("metavar") or f.name.upper()
        target.add_argument(flag, **kwargs)


def add_tracking_uri(
    parser: argparse.ArgumentParser | Any, *, default: Any = None, first: str | None = None
) -> None:
    """``--tracking-uri URI``: the MLflow store, on a parser or argument group. ``default``:
    when the flag is not given (``argparse.SUPPRESS``: unset, so a config file's value stands);
    ``first``: a source consulted before the environment, named in the help."""
    chain = ", ".join(filter(None, (first, "$MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")))
    parser.add_argument("--tracking-uri", dest="tracking_uri", metavar="URI", default=default,
                        help=f"MLflow tracking URI (default: {chain})")  # fmt: skip


def add_output(parser: argparse.ArgumentParser) -> None:
    """``--output table|json``: how a command prints its rows on stdout."""
    parser.add_argument("--output", choices=OUTPUT_CHOICES, default="table",
                        help="print an aligned table or JSON (default: table)")  # fmt: skip


def add_server_address(parser: argparse.ArgumentParser, *, port: int) -> None:
    """``--host`` / ``--port`` of a server a command starts: this machine only by default."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine)")
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
