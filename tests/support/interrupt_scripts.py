"""Source for ``python -c`` children that meet a Ctrl-C while the CLI starts."""

from __future__ import annotations

# A Ctrl-C at the moment a module is imported: a finder that raises KeyboardInterrupt there,
# as SIGINT's default handler would (``.format(name=MODULE_NAME)``).
FINDER = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {name!r}:
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, Interrupt())
"""
# The gguf-embed console script's entry point (needs ``sys`` imported).
SCRIPT = "sys.argv[0] = 'gguf-embed'\nfrom gguf_embed.cli import main\nmain()\n"
