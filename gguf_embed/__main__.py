"""``python -m gguf_embed ...``: the CLI, where the ``gguf-embed`` script is not on PATH."""

from .cli import main

main()
