"""How a finished one-shot command ends the process: without Python's teardown.

After a search has printed its results, the interpreter would still tear itself down: every
module's globals cleared, every object's destructor run (llama.cpp's model and context freed,
faiss and numpy finalised).  On a 2-core host that is 60-100 ms of a one-shot search that
does nothing for the user: the kernel frees the memory and closes the files anyway, and a
search has written nothing.

A command that writes nothing asks for it (:func:`quickly`); :func:`leave`, called by
``main()`` with the command's exit code, then does what the interpreter's own exit does
first, in its order (threads joined, ``atexit`` handlers, standard streams flushed), and ends
the process with ``os._exit``.  Anything unexpected (a code that is not a number, a stream
that cannot be flushed) leaves the ordinary exit to happen instead.  Only the real process
ends this way: ``main()`` is the console script's entry, never called by click's test
runner.

Ctrl-C on the way out: the ordinary exit would print a traceback for one that lands in an
``atexit`` handler (and keep exit code 0), and ``os._exit`` would drop one that Python had
noted but not yet handled.  So a SIGINT that arrives before the results are all flushed is
``KeyboardInterrupt`` for ``main()`` (``Interrupted.``, exit 130): while the ``atexit``
handlers run and the output is flushed it is noted, not raised, and what SIGINT does from
then on is the kernel's default, as for any program past its last write (the process ends
killed by SIGINT, which a shell reports as 130).  SIGTERM keeps its default throughout.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import signal
else:  # the C module under signal.py, without the enums it builds (0.4 ms of a search)
    try:
        import _signal as signal
    except ImportError:  # not CPython
        import signal

_asked = False
_main = False  # main() runs: this is the real process, not click's test runner


def started() -> None:
    """``main()`` starts: no command has asked yet (a search run earlier in the same process,
    e.g. by click's test runner, does not count)."""
    global _main
    _main = True
    forget()


def ending() -> None:
    """The process is on its way out (``Interrupted.`` is printed): a second Ctrl-C ends it at
    once, as SIGINT's default does, instead of a traceback from the teardown's code.  In the
    real process only (click's test runner calls the commands in the test's process)."""
    if not _main or threading.current_thread() is not threading.main_thread():
        return
    while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        with contextlib.suppress(KeyboardInterrupt):  # the second, noted before the swap
            signal.signal(signal.SIGINT, signal.SIG_DFL)


def quickly() -> None:
    """The running command writes nothing that the interpreter's teardown could still owe:
    end the process without it once the command has returned."""
    global _asked
    _asked = True


def forget() -> None:
    """No command has asked yet."""
    global _asked
    _asked = False


def leave(code: object) -> None:
    """End the process now with ``code`` (a ``SystemExit``'s code) if the command asked for
    it; return (for the ordinary exit) otherwise."""
    asked = _asked
    forget()
    if not asked or not (code is None or isinstance(code, int)):
        return
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter's exit runs first
    if shutdown is None or not _flushed():  # e.g. a closed pipe: the ordinary exit reports it
        return
    shutdown()  # joins the threads that are not daemons (thread pools' workers too)
    held = _Held.start()
    try:
        atexit._run_exitfuncs()
        if not _flushed():  # what the handlers printed
            return
        if held is not None:
            held.last()
        if held is None or not held.came():
            os._exit(code or 0)
    finally:
        if held is not None:
            held.end()
    if held is not None and held.came():
        raise KeyboardInterrupt  # for main(): Interrupted., 130


class _Held:
    """SIGINT noted instead of raised while the ``atexit`` handlers run and the output is
    flushed.  Python's C-level handler writes the number of each signal it takes to the
    wake-up fd, whichever thread takes it: once SIGINT's handler is SIG_DFL, what came before
    is all in the pipe (even one that landed after Python last looked at its flags) or still
    pending (blocked, e.g. by C code on this thread)."""

    def __init__(self, read: int, write: int, wakeup: int) -> None:
        self.read, self.write, self.wakeup = read, write, wakeup
        self.noted = False

    @classmethod
    def start(cls) -> _Held | None:
        """None where SIGINT is not Python's own handler (ignored, as under ``nohup``; an
        application's) or on another thread: the exit then goes on as it would."""
        if (os.name == "nt"  # its wake-up fd is a socket
                or threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return None
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        held = cls(read, write, signal.set_wakeup_fd(write, warn_on_full_buffer=False))
        try:
            signal.signal(signal.SIGINT, _note)  # one noted before now is raised here
        except BaseException:
            held.end()
            raise
        return held

    def last(self) -> None:
        """Past the last write: SIGINT's default from here on (the process ends killed by it,
        as any program past its last write).  SIGINT is blocked on this thread for the swap:
        one landing between Python's last look at its flags and the new handler would be
        reported as "ignored due to race condition"; one that came meanwhile is taken from
        the pending set and noted."""
        if not hasattr(signal, "sigtimedwait"):  # macOS
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if signal.sigtimedwait({signal.SIGINT}, 0) is not None:
                self.noted = True
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def came(self) -> bool:
        with contextlib.suppress(BlockingIOError):  # nothing (more) came
            self.noted = self.noted or signal.SIGINT in os.read(self.read, 4096)
        return self.noted

    def end(self) -> None:
        """Python's handler and the previous wake-up fd back."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(self.wakeup)
        os.close(self.read)
        os.close(self.write)


def _note(signum: int, frame: object) -> None:
    """SIGINT's handler while held: the wake-up fd has it."""


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        return False
    return True
