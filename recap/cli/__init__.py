"""`recap ...` / `python -m recap ...`: one subcommand module per concept, all calling the core."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from recap.errors import RecapError

# Each module exposes register(subparsers) and sets `func` on its parser.
COMMANDS = [
    "recap.cli.generate",
    "recap.cli.recaption",
    "recap.cli.tokens",
    "recap.cli.analyze",
    "recap.cli.fad",
    "recap.cli.study",
    "recap.cli.experiment",
    "recap.cli.transfer",
    "recap.cli.toy",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recap", description="Study how wording steers text-to-audio diffusion models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command family this install does not have
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Library deprecation chatter (weight_norm, AudioLDM) is not for CLI users; -v shows it.
    if not args.verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except (RecapError, ValueError, FileNotFoundError) as exc:
        # The one place the CLI turns an expected failure into a sentence; anything else is a bug
        # and keeps its traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
