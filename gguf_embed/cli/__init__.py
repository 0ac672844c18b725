"""The ``gguf-embed`` command: thin click shells over the library.

Paths, environment variables and terminal concerns are resolved here and nowhere else.
stdout carries results only; progress, logs and errors go to stderr.  Ctrl-C ends any command
with ``Interrupted.`` and exit code 130 (see ``_Group`` in _base.py), even while it imports:
``import gguf_embed`` costs nothing (its names load on first use) and each command's module,
with numpy, SQLite or llama.cpp behind it, is imported inside the group's Ctrl-C handling.
"""

from __future__ import annotations

import sys

try:
    from ._base import cli, interrupted
except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C while click itself loads
    sys.stderr.write("Interrupted.\n")
    raise SystemExit(130) from None


def main() -> None:
    try:
        cli(prog_name="gguf-embed")
    except KeyboardInterrupt:  # outside a command (option parsing, a prompt)
        interrupted()


__all__ = ["cli", "main"]
