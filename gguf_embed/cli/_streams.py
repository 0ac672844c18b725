"""The CLI's standard streams: stdin read as lines, whether stderr is a terminal, and a write
of the results to stdout that fails (a full disk, a closed pipe, a closed stdout)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Any, NoReturn

import click


class _Results(io.FileIO):
    """stdout's descriptor under ``sys.stdout`` (see :func:`watch_results`): keeps the
    ``OSError`` a write of the results raised, so that the group tells it from any other
    ``OSError`` by identity (the same object comes up through the buffer and click.echo)."""

    failed: OSError | None = None

    def write(self, data: Any, /) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            _Results.failed = exc
            raise


def watch_results() -> None:
    """Put :class:`_Results` under ``sys.stdout`` (the real process only: ``main()``), with the
    stream's own encoding, error handler and buffering."""
    out = sys.stdout
    if out is None or out is not sys.__stdout__ or not isinstance(out, io.TextIOWrapper):
        return
    try:
        out.flush()
        raw = _Results(out.fileno(), "w", closefd=False)
    except (OSError, ValueError):
        return
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding=out.encoding,
                                  errors=out.errors, line_buffering=out.line_buffering,
                                  write_through=out.write_through)


def results_failed(exc: BaseException) -> bool:
    """``exc`` was raised by a write of the results to stdout."""
    return exc is _Results.failed


def results_not_written(exc: OSError) -> NoReturn:
    """A write to stdout failed.  A closed pipe (``| head -1``) ends quietly with 141
    (128 + SIGPIPE, what a tool killed by SIGPIPE reports, so ``set -o pipefail`` sees the
    usual code; SIGPIPE itself stays ignored: serve and mcp write to sockets); anything else
    (a full disk) is one line and exit 1.  stdout then points at /dev/null (as Python's
    documentation suggests for EPIPE), so that the flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    if isinstance(exc, BrokenPipeError):
        sys.exit(141)
    raise click.ClickException(f"cannot write the results: {exc.strerror or exc}")


def need_stdout() -> None:
    """A command whose output is its results refuses a closed stdout (``>&-``)."""
    if sys.stdout is None:
        raise click.ClickException("cannot write the results: stdout is closed")


def stdin_lines(what: str) -> list[str]:
    """stdin as lines of UTF-8 text, split at ``\n`` only (one ``\r`` ending a CRLF line is
    dropped): line N of the output answers line N of the input even when a line holds a lone
    ``\r``, a form feed or U+2028, which ``splitlines()`` would split at.  A line that is not
    UTF-8 is a one-line error naming it as ``what`` (input, query) numbered from 0, as the
    commands number inputs in errors and warnings."""
    if sys.stdin is None:  # <&-: no lines
        return []
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        return _split_lines(sys.stdin.read(), "\n", "\r")
    lines = []
    for number, raw in enumerate(_split_lines(stream.read(), b"\n", b"\r")):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise click.ClickException(
                f"{what} {number} is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                f"byte {exc.start})") from exc
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


def _split_lines(data: Any, newline: Any, cr: Any) -> list[Any]:
    """``data`` (str or bytes) split at ``newline``; no last empty line after a final one."""
    lines = data.split(newline)
    if lines and not lines[-1]:
        lines.pop()
    return [line[:-1] if line.endswith(cr) else line for line in lines]


def stderr_is_terminal() -> bool:
    """stderr is a terminal; False when it is closed (``2>&-``: Python sets it to None)."""
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # a closed file object
        return False
