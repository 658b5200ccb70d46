"""The ``jettag`` command: one subcommand per module in ``jettag.commands``.

Each command module defines ``register(subparsers)`` (adds its parser and sets ``func``) and keeps
heavy imports inside the function that runs, so ``jettag --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "demo",
    "study",
    "generate",
    "convert",
    "inspect",
    "train",
    "evaluate",
    "predict",
    "models",
    "info",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jettag",
        description="Jet tagging with transformers: generate or read jets, train, evaluate, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"jettag.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
