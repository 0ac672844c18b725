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
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

_asked = False


def quickly() -> None:
    """The running command writes nothing that the interpreter's teardown could still owe:
    end the process without it once the command has returned."""
    global _asked
    _asked = True


def forget() -> None:
    """No command has asked yet (``main()`` starts with this: a search run earlier in the same
    process, e.g. by click's test runner, does not count)."""
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
    atexit._run_exitfuncs()
    if _flushed():  # what the handlers printed
        os._exit(code or 0)


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        return False
    return True
