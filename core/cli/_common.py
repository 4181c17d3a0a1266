"""Helpers every CLI module shares: common options, the workspace and the
acting user, and printing results as text or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from core import auth, store
from core.store import Workspace

Handler = Callable[[argparse.Namespace], Any]


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand with the options every command takes (--home, --user, --json)."""
    parser = sub.add_parser(name, help=help, description=description or help)
    add_common_options(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="workspace folder (default: $POND_HOME or ./.pond)")
    parser.add_argument("--user", help="act as this user (default: $POND_USER)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def workspace(args: argparse.Namespace) -> Workspace:
    return store.open_workspace(args.home)


def actor(args: argparse.Namespace, ws: Workspace) -> auth.User:
    """The acting user: --user, else $POND_USER (shell access is full trust)."""
    return auth.acting_user(ws, args.user or os.environ.get("POND_USER"))


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return to_jsonable(value.to_dict())
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def emit(args: argparse.Namespace, result: Any, text: str | Iterable[str] | None = None) -> None:
    """Print `result` as JSON with --json, else print `text` (or the JSON, indented)."""
    if args.json:
        print(json.dumps(to_jsonable(result), default=str))
        return
    if text is None:
        print(json.dumps(to_jsonable(result), indent=2, default=str))
    elif isinstance(text, str):
        print(text)
    else:
        for line in text:
            print(line)


def table(rows: list[list[Any]], headers: list[str]) -> list[str]:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def fail(message: str, *, code: int = 1, as_json: bool = False) -> None:
    """One line on stderr (and an error object on stdout with --json)."""
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    print(f"pond: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)


def seconds_or_none(text: str) -> float | None:
    """An argparse type: a number of seconds, or 'none' (also 'off', 'no') for no limit."""
    if text.strip().lower() in ("none", "off", "no"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds or 'none'; got {text!r}"
        ) from None


def draw_progress(stream: Any, fraction: float, elapsed_s: float, budget_s: float | None,
                  detail: str, *, elapsed_width: int = 5, cap: int = 120,
                  done: bool = False) -> None:
    """Redraw one progress line on a terminal: a bar, the time used (of the budget) and
    `detail`; a newline when `done`."""
    width = 24
    filled = int(round(fraction * width))
    bar = "#" * filled + "." * (width - filled)
    budget = f"/{budget_s:.0f}s" if budget_s else "s"
    stream.write(f"\r[{bar}] {elapsed_s:{elapsed_width}.1f}{budget} {detail}".ljust(100)[:cap])
    if done:
        stream.write("\n")
    stream.flush()


class Fanout:
    """One progress callback that calls several (None ones left out)."""

    def __init__(self, *callbacks: Any) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def __call__(self, progress: Any) -> None:
        for callback in self.callbacks:
            callback(progress)
