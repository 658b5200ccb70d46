"""The errors jettag reports to a user, and the check for optional dependencies.

Every error that the user can act on (bad data, a bad recipe, a bad checkpoint, a missing extra, a
failed generation) derives from :class:`JettagError`. ``jettag.cli.main`` prints such an error as
one line ``jettag <command>: <message>`` on stderr and exits with its ``exit_code``: 2 for bad
input (the default), 1 for a run that failed. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib

#: exit codes of the ``jettag`` command
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

#: the library's advice in data errors (``jettag.data.store.validate_jets``); ``jettag.cli`` replaces
#: it with the spelling of the command that read the data (``--drop-invalid``, ``data.drop_invalid=true``)
DROP_INVALID_ADVICE = "pass drop_invalid=True (CLI: --drop-invalid)"


class JettagError(Exception):
    """An error with a message meant for the user; ``exit_code`` 2 = bad input, 1 = a failed run."""

    exit_code: int = EXIT_BAD_INPUT


class RunFailedError(JettagError):
    """Valid input, but the run could not be completed (e.g. Pythia produced no usable events)."""

    exit_code = EXIT_FAILED


class UsageError(JettagError, ValueError):
    """Arguments or options that cannot work together (a bad count, a clash of options)."""


class MissingExtraError(JettagError, ImportError):
    """An optional dependency group (``pip install 'jettag[<extra>]'``) is not installed."""


#: the importable modules of each optional dependency group in pyproject.toml
EXTRAS: dict[str, tuple[str, ...]] = {
    "generate": ("pythia8mc", "fastjet"),
    "onnx": ("onnx", "onnxruntime"),
}


def require_extra(extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` if any of its modules cannot be imported.

    Call it before any work starts (files written, worker processes started), so that a missing
    extra costs the user one line and nothing else. ``purpose`` says what needs the extra.
    """
    modules = EXTRAS[extra]
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"{purpose} needs the {extra!r} extra ({', '.join(modules)}; missing: {', '.join(missing)}): "
            f"pip install 'jettag[{extra}]'"
        )
