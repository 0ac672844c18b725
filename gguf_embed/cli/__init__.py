"""The ``gguf-embed`` command: thin click shells over the library.

Paths, environment variables and terminal concerns are resolved here and nowhere else.
stdout carries results only; progress, logs and errors go to stderr.
"""

from __future__ import annotations

from . import _doctor, _index, _merge, _serve, _watch  # noqa: F401  (register their commands)
from ._base import cli


def main() -> None:
    cli(prog_name="gguf-embed")


__all__ = ["cli", "main"]
