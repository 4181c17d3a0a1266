"""The `pond` command line (also `python -m core`).

Every command is thin over `core`: it parses arguments, makes one core call
and prints the result, as JSON with `--json`. It exits 0 on success and
non-zero with a one-line reason on failure. Commands live in one module per
domain; each module offers `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from core import __version__
from core.cli import (
    _common,
    data,
    drift,
    evaluate,
    features,
    feedback,
    finetune,
    registry,
    retrain,
    serve,
    train,
    users,
)
from core.errors import PondError

# Domain modules that add subcommands, in the order `pond --help` lists them.
COMMAND_MODULES = [
    data, features, registry, train, finetune, evaluate, serve, drift, retrain, feedback, users,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pond",
        description="Pond: a low-code MLOps studio. Every command acts on one workspace "
        "(--home or POND_HOME, default ./.pond) as one user (--user or POND_USER).",
    )
    parser.add_argument("--version", action="version", version=f"pond {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except PondError as exc:
        _common.fail(str(exc), code=getattr(exc, "exit_code", 1), as_json=args.json)
        return getattr(exc, "exit_code", 1)
    except MemoryError:
        _common.fail("ran out of memory; try a smaller input", code=1, as_json=args.json)
        return 1
    except KeyboardInterrupt:
        _common.fail("interrupted", code=130, as_json=args.json)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line, traceback on request
        if os.environ.get("POND_DEBUG"):
            raise
        _common.fail(
            f"internal error: {type(exc).__name__}: {exc} (set POND_DEBUG=1 for the traceback)",
            code=70,
            as_json=args.json,
        )
        return 70
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
