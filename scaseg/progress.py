"""One progress display for every command: a tqdm bar on a terminal, a few plain lines anywhere else.

A log file or a pipe (CI, ``cmd 2> log``, ``| tee``) gets no carriage-return redraws and no terminal escape
codes: one line at the start, one each time another quarter is done, one at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

PLAIN_STEP = 0.25  # a plain line each time this share of the total is done
_quiet = False


def set_quiet(quiet: bool) -> None:
    """-q/--quiet: every progress display of this process stays silent (results and warnings still print)."""
    global _quiet
    _quiet = bool(quiet)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """The subset of tqdm's interface the commands use, printing whole lines."""

    def __init__(self, iterable: Optional[Iterable[Any]] = None, *, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", initial: float = 0, file: Optional[TextIO] = None, disable: bool = False,
                 **_: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file = file or sys.stderr
        self.disable = disable
        self.postfix = ""
        self._start = time.perf_counter()
        self._initial = initial
        self._next = self._step_after(initial)
        self._closed = False
        self._say(f"{initial:g}/{total:g} {unit}" if total else "started")

    def _step_after(self, n: float) -> float:
        if not self.total:
            return float("inf")
        done = int(n / self.total / PLAIN_STEP) + 1
        return done * PLAIN_STEP * self.total

    def _say(self, text: str) -> None:
        if self.disable:
            return
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc + ': ' if self.desc else ''}{text}{extra}", file=self.file, flush=True)

    def _rate(self) -> str:
        elapsed = time.perf_counter() - self._start
        done = self.n - self._initial
        rate = f", {done / elapsed:.2f} {self.unit}/s" if elapsed > 0 and done > 0 else ""
        return f"{elapsed:.1f} s{rate}"

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total and self.n >= self._next and self.n < self.total:
            self._say(f"{100 * self.n / self.total:.0f}% ({self.n:g}/{self.total:g} {self.unit}, {self._rate()})")
            self._next = self._step_after(self.n)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        total = f"/{self.total:g}" if self.total else ""
        pct = f"{100 * self.n / self.total:.0f}%, " if self.total else ""
        self._say(f"{'done' if not self.total or self.n >= self.total else 'stopped'}: {pct}{self.n:g}{total} "
                  f"{self.unit} in {self._rate()}")

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def write(text: str, file: Optional[TextIO] = None, end: str = "\n") -> None:
        print(text, file=file or sys.stdout, end=end, flush=True)


def progress(iterable: Optional[Iterable[Any]] = None, **kwargs: Any) -> Any:
    """A tqdm bar when the stream (``file=``, default stderr) is a terminal, else :class:`PlainProgress`.

    Takes tqdm's arguments (``total``, ``desc``, ``unit``, ``disable``, ``leave``, ...).
    """
    stream = kwargs.get("file") or sys.stderr
    kwargs["file"] = stream
    if _quiet:
        kwargs["disable"] = True
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, **kwargs)
    return PlainProgress(iterable, **kwargs)


def write(text: str, file: Optional[TextIO] = None) -> None:
    """Print a line without breaking a bar that is being drawn (tqdm.write on a terminal, print elsewhere)."""
    stream = file or sys.stdout
    if _is_terminal(sys.stderr):
        from tqdm import tqdm

        tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)
