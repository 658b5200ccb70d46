"""Progress reports: a tqdm bar on a terminal, a short log line every few seconds anywhere else.

A redirected log (a batch job, ``jettag train ... 2> log``) would otherwise receive a redrawn bar
for every update (about 128 bytes per training batch); here it gets at most one line per
``interval`` seconds plus one line at the end. Training, prediction, conversion and generation all
report through :func:`progress`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, Union

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")

#: seconds between two log lines when the stream is not a terminal
LOG_INTERVAL_S = 10.0


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class LogProgress:
    """Progress as plain lines: at most one per ``interval`` seconds, and one when closed."""

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        total: int | None,
        desc: str,
        unit: str,
        initial: int,
        interval: float,
        stream: TextIO,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.desc, self.unit, self.interval, self.stream = desc, unit, interval, stream
        self.n = self._start = initial
        self._t0 = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LogProgress without an iterable is updated by hand"
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()  # only after the last item: an error or an early stop leaves no "done" line

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the error message follows; a final count line would only hide it
            self._closed = True

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(now, done=False)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write(time.monotonic(), done=True)

    def _write(self, now: float, done: bool) -> None:
        elapsed = now - self._t0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total and not done else ""
        rate = (self.n - self._start) / elapsed if elapsed > 0 else 0.0
        line = f"{self.desc}: {count} {self.unit}{share} in {elapsed:.1f} s ({rate:.3g} {self.unit}/s)"
        if self._postfix:
            line += f", {self._postfix}"
        print(line, file=self.stream, flush=True)


def _length(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class _NoProgress:
    """Reports nothing (progress turned off)."""

    def __init__(self, iterable: Iterable[Any] | None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        return iter(self.iterable)

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


#: what :func:`progress` returns; all three have ``update``, ``set_postfix``, ``close`` and ``with``
Progress = Union["tqdm", "LogProgress", "_NoProgress"]


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    leave: bool = True,
    interval: float = LOG_INTERVAL_S,
    stream: TextIO | None = None,
) -> Progress:
    """A progress report over ``iterable`` (iterate it) or of ``total`` units (call ``update``).

    On a terminal ``stream`` (default ``sys.stderr``) this is a tqdm bar (``leave=False`` clears it
    when done); otherwise a :class:`LogProgress` writing at most one line per ``interval`` seconds
    and a final line. ``enabled=False`` reports nothing. All three support ``update``,
    ``set_postfix``, ``close``, iteration (when given an iterable) and ``with``.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return _NoProgress(iterable)
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream,
                    dynamic_ncols=True)
    return LogProgress(iterable, total, desc, unit, initial, interval, stream)
