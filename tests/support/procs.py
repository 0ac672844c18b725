"""Helpers for tests that run gguf-embed in a real subprocess."""

from __future__ import annotations

import signal
import subprocess


def interrupt(proc: subprocess.Popen, timeout: float) -> None:
    """Ctrl-C the process and wait for it; kill it if it does not end within ``timeout``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
