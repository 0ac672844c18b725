"""The ``gguf-embed`` command: thin click shells over the library.

Paths, environment variables and terminal concerns are resolved here and nowhere else.
stdout carries results only; progress, logs and errors go to stderr.  Ctrl-C ends any command
with ``Interrupted.`` and exit code 130 (see ``_Group`` in _base.py), even while it imports.
"""

from __future__ import annotations

from ._base import cli, interrupted

try:
    from . import _doctor, _index, _merge, _serve, _watch  # noqa: F401  (register their commands)
except KeyboardInterrupt:  # pragma: no cover - a Ctrl-C while the commands load
    interrupted()


def main() -> None:
    try:
        cli(prog_name="gguf-embed")
    except KeyboardInterrupt:  # outside a command (option parsing, a prompt)
        interrupted()


__all__ = ["cli", "main"]
