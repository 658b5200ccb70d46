"""The ``jettag`` command: one subcommand per module in ``jettag.commands``.

Each command module defines ``register(subparsers)`` (adds its parser and sets ``func``) and keeps
heavy imports inside the function that runs, so ``jettag --help`` stays fast.

Errors reach the user one way, here: a :class:`jettag.errors.JettagError` (bad data, recipe,
checkpoint, a missing extra, a failed generation) or an ``OSError`` (a missing or unwritable file)
is printed as one line ``jettag <command>: <message>`` on stderr with exit code 2 (bad input) or 1
(a failed run); ``--debug`` shows the traceback instead. Ctrl-C prints one line and exits 130; a
closed output pipe (``jettag models | head -1``) ends the command quietly. Commands raise, they do
not print errors themselves.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from jettag.errors import DROP_INVALID_ADVICE, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, JettagError

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
    "interpret",
)

_DEBUG_HELP = "show the full traceback of an error instead of one line"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jettag",
        description="Jet tagging with transformers: generate or read jets, train, evaluate, export.",
        epilog="Errors are one line 'jettag COMMAND: message' on stderr, exit code 2 for bad input and 1 "
        "for a failed run; --debug shows the traceback.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"jettag.commands.{name}").register(sub)
    for command in sub.choices.values():  # `jettag inspect --debug F` as well as `jettag --debug inspect F`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def error_line(command: str, err: BaseException, drop_invalid_advice: str | None = None) -> str:
    """The one line shown for ``err``: ``jettag <command>: <message>``, advice in the command's terms."""
    message = " ".join(str(err).split()) or type(err).__name__
    if drop_invalid_advice:
        message = message.replace(DROP_INVALID_ADVICE, drop_invalid_advice)
    return f"jettag {command}: {message}"


def _exit_code(err: Exception) -> int:
    if isinstance(err, JettagError):
        return err.exit_code
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here for output still buffered
        return code
    except BrokenPipeError:
        # the reader went away (`jettag models | head -1`): stop quietly. Python would flush stdout
        # again at exit and complain, so point stdout at devnull first (the Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"jettag {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (JettagError, OSError) as err:
        if args.debug:
            raise
        print(error_line(args.command, err, getattr(args, "drop_invalid_advice", None)), file=sys.stderr)
        return _exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
