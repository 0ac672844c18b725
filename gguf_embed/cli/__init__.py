"""The ``gguf-embed`` command: thin click shells over the library.

Paths, environment variables and terminal concerns are resolved here and nowhere else.
stdout carries results only; progress, logs and errors go to stderr.  Ctrl-C ends any command
with ``Interrupted.`` and exit code 130 (see ``_Group`` in _base.py), even while it starts:
``import gguf_embed`` runs nothing (its names load on first use), the console script (or
``python -m gguf_embed``) gets SIGINT's start-up handler here before anything else is
imported, and each command's module, with numpy, SQLite or llama.cpp behind it, is imported
inside the group's Ctrl-C handling.  What comes before this module runs (the interpreter's
own start, ``site``, finding the package) is Python's.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: its import (~2 ms) would come before the handling below


def _at_once(signum: int, frame: object) -> None:
    """SIGINT's handler while the command starts (until ``main()`` is in its ``try``): the
    ``KeyboardInterrupt`` of Python's own handler would land in import machinery outside
    any handling of ours (``from gguf_embed.cli import main`` ends in importlib's
    ``_handle_fromlist``), and a ``SystemExit`` leaves from anywhere without a traceback.
    A second Ctrl-C ends the process at once, as SIGINT's default does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.stderr is not None:  # 2>&-
        sys.stderr.write("Interrupted.\n")
    raise SystemExit(130)


def _entry() -> bool:
    """This process is the command: its console script or ``python -m gguf_embed`` (not an
    application, or a test, that imports the click group)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    argv = getattr(sys, "argv", None) or [""]
    return (getattr(spec, "name", None) == "gguf_embed.__main__"
            or os.path.basename(argv[0]).removesuffix(".exe") == "gguf-embed")


try:
    if TYPE_CHECKING:
        import signal
    else:  # the C module under signal.py, without the enums it builds (0.4 ms of a command)
        try:
            import _signal as signal
        except ImportError:  # not CPython
            import signal

    if _entry() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _at_once)  # not where SIGINT is ignored (nohup)
    import click

    from ._base import cli, interrupted
    from ._exit import leave, started
    from ._streams import results_failed, results_not_written, watch_results
except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C while click itself loads
    if sys.stderr is not None:  # 2>&-
        sys.stderr.write("Interrupted.\n")
    raise SystemExit(130) from None


def main() -> None:
    try:
        if signal.getsignal(signal.SIGINT) is _at_once:  # Ctrl-C: KeyboardInterrupt again
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _start()
        try:
            cli(prog_name="gguf-embed")
        except SystemExit as exc:  # how click's standalone mode always ends
            code = _flushed(exc.code)
            leave(code)  # a finished search: no interpreter teardown (see _exit.py)
            raise SystemExit(code) from None
    except KeyboardInterrupt:  # outside a command: before it, option parsing, a prompt, or
        interrupted()  # after it, while its results are flushed and the process ends


def _start() -> None:
    started()  # the real process: no command has asked to leave yet (see _exit.py)
    # numpy's OpenBLAS starts one spinning thread per core when numpy is imported: ~50 ms of a
    # one-shot search on a busy 2-core host (more with more cores).  The commands' own matrix
    # products are small (rescoring ~1,000 vectors; llama.cpp has its own threads): one
    # thread, unless the user set it.  numpy is imported by the command, after this.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _hold_standard_descriptors()
    if sys.stderr is None:  # 2>&-: click's Error:/Usage: lines fall back to stdout without it
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process
    watch_results()  # a failed write of the results: one line, or 141 for a closed pipe


def _flushed(code: object) -> object:
    """``code``, once what is left of the results is written; a write that fails now is
    reported as in a command (the interpreter's own flush at exit would only warn)."""
    try:
        try:
            if sys.stdout is not None:
                sys.stdout.flush()
        except OSError as exc:
            if not results_failed(exc):
                raise
            results_not_written(exc)
    except SystemExit as exc:
        return exc.code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return code


def _hold_standard_descriptors() -> None:
    """A standard descriptor the shell closed (``2>&-``, ``>&-``) is pointed at /dev/null:
    else the next file opened (a model, ``INDEX.bits``) takes its number, and what C code
    writes to stderr (llama.cpp, ggml) lands in that file.  Python has already set
    ``sys.stderr`` (``sys.stdout``) to None, which the commands check."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


__all__ = ["cli", "main"]
