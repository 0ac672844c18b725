"""Reading a subprocess's stderr with a deadline (a line that never comes fails the test, it
does not hang it)."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import IO


class Lines:
    """Collects the lines of ``stream`` on a thread."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.text += line

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if needle in self.text:
                    return True
            if not self._thread.is_alive():
                return needle in self.text
            time.sleep(0.05)
        return False

    def rest(self, proc: subprocess.Popen[str], timeout: float = 10) -> str:
        """All of stderr once ``proc`` has ended."""
        proc.wait(timeout)
        self._thread.join(timeout)
        return self.text


def line_with(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """The first line of ``proc``'s stderr that holds ``needle``, read on this thread, so the
    caller acts the moment it is written (the lines before it are dropped)."""
    import select

    assert proc.stderr is not None
    line = ""
    deadline = time.monotonic() + timeout
    while needle not in line:
        assert time.monotonic() < deadline and proc.poll() is None, line
        if select.select([proc.stderr], [], [], 1)[0]:
            line = proc.stderr.readline()
    return line
