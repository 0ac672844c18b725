"""Text that cannot be encoded as UTF-8: bytes that were not UTF-8 (carried by Python as lone
surrogates U+DC80..U+DCFF, e.g. from command-line arguments or file names) and lone surrogates
from JSON (``"\\ud800"``).  Found before it reaches llama.cpp or SQLite, as a typed error."""

from __future__ import annotations

import re

from .errors import InputError

_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_problem(text: str) -> str | None:
    """What makes ``text`` unencodable as UTF-8, or None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"byte 0x{code - 0xDC00:02x} at character {found.start()} is not UTF-8"
    return f"a lone surrogate U+{code:04X} at character {found.start()}"


def check_text(text: str, what: str, param: str | None = None) -> None:
    """Raise :class:`InputError` if ``text`` cannot be encoded as UTF-8."""
    problem = unicode_problem(text)
    if problem:
        raise InputError(f"{what} is not valid UTF-8 text ({problem})", param=param)
