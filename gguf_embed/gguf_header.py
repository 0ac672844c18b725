"""Reading and checking a GGUF file's header before llama.cpp sees it.

llama.cpp trusts much of a GGUF header: a crafted or damaged file (a ``block_count`` of 0 or
10^6, a tensor count of 2^60, a truncated header) can abort the whole process inside it (exit
134, with no Python exception to catch).  :func:`check_gguf` reads the header on its own first,
with every count and length checked against the file's size, and raises a one-line
:class:`~gguf_embed.errors.ModelLoadError` naming the file and the field; only a file that
passes is given to llama.cpp.  It needs nothing beyond the standard library (the ``gguf``
package is a test dependency only).

The format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little-endian:
magic ``GGUF``, version (u32), tensor count (u64), metadata count (u64), the metadata
key/value pairs, the tensor infos (name, dims, type, offset), then the aligned tensor data.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, ModelNotFound

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what llama.cpp reads (version 1 is long gone)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME: bytes in a tensor name
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 512  # LLAMA_MAX_EXPERTS
MAX_CONTEXT = 1 << 24  # tokens: above every real model's context_length (10M at most today)
MAX_EMBEDDING = 1 << 16  # hidden size: real models stay under 32,768
MAX_HEADS = 1 << 14
MAX_FFN = 1 << 20
MAX_STRING = 1 << 24  # one metadata string (a chat template is a few KB)
ARRAY = 9
STRING = 8
# scalar metadata types: struct format (little-endian)
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
INTEGERS = (0, 1, 2, 3, 4, 5, 10, 11)
# ggml types: (elements per block, bytes per block), as ggml's type traits (tests check these
# against the gguf package's GGML_QUANT_SIZES).  A type missing here (a newer one) is left to
# llama.cpp to size.
TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}
MAX_TYPE = 255
_U64 = struct.Struct("<Q")
_READ: dict[tuple[Any, ...], GgufHeader] = {}  # headers read, by file identity and mtime


@dataclass(frozen=True)
class Array:
    """A metadata array: its element type and length (its values are not kept)."""

    type: int
    count: int


@dataclass
class GgufHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)  # scalars, strings, Array
    tensors: dict[str, tuple[int, tuple[int, ...], int]] = field(default_factory=dict)
    # name -> (ggml type, shape, offset in the data section)
    data_start: int = 0
    size: int = 0

    @property
    def arch(self) -> str:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else ""


class _Bad(Exception):
    """What is wrong with the header (becomes a ModelLoadError naming the file)."""


class _Reader:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def take(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise _Bad(f"truncated header: {what} at byte {self.pos} runs past the end of the "
                       f"file ({self.size} bytes)")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.take("<Q", f"the length of {what}")
        if n > MAX_STRING or self.pos + n > self.size:
            raise _Bad(f"{what} at byte {self.pos} claims {n:,} bytes; the file has "
                       f"{self.size - self.pos:,} left")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def _skip_strings(self, count: int, key: str) -> None:
        """Step over ``count`` strings (a vocabulary: 150,000 of them), each checked."""
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        for i in range(count):
            if pos + 8 > size:
                raise _Bad(f"truncated header: element {i} of {key} at byte {pos} runs past "
                           f"the end of the file ({size} bytes)")
            n = unpack(buf, pos)[0]
            pos += 8 + n
            if n > MAX_STRING or pos > size:
                raise _Bad(f"element {i} of {key} at byte {pos - n} claims {n:,} bytes; the "
                           f"file has {max(size - pos + n, 0):,} left")
        self.pos = pos

    def value(self, vtype: int, key: str) -> Any:
        if vtype == STRING:
            return self.string(f"the value of {key}")
        if vtype == ARRAY:
            sub = self.take("<I", f"the element type of {key}")
            count = self.take("<Q", f"the length of {key}")
            left = self.size - self.pos
            if sub in SCALARS:
                width = struct.calcsize(SCALARS[sub])
                if count * width > left:
                    raise _Bad(f"array {key} claims {count:,} elements; the file has room "
                               f"for {left // width:,}")
                self.pos += count * width
            elif sub == STRING:
                if count * 8 > left:
                    raise _Bad(f"array {key} claims {count:,} strings; the file has room for "
                               f"{left // 8:,}")
                self._skip_strings(count, key)
            else:
                raise _Bad(f"array {key} has elements of type {sub}, which GGUF models do "
                           f"not use")
            return Array(sub, count)
        if vtype not in SCALARS:
            raise _Bad(f"metadata key {key} has unknown type {vtype}")
        return self.take(SCALARS[vtype], f"the value of {key}")


def read_header(path: str | Path) -> GgufHeader:
    """The header of the GGUF file at ``path``, every length and count checked against the
    file's size; raises :class:`ModelLoadError` (one line, naming the file and the field)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            size = info.st_size
            key = (str(path), info.st_dev, info.st_ino, size, info.st_mtime_ns)
            if key in _READ:
                return _READ[key]
            if size < 24:
                head = fh.read(4)
                if head[:4] != MAGIC[:len(head)] or not head:
                    raise _not_gguf(path, head)
                raise ModelLoadError(f"cannot load {path}: truncated GGUF header "
                                     f"({size} bytes); re-download the model")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if buf[:4] != MAGIC:
                    raise _not_gguf(path, bytes(buf[:4]))
                try:
                    header = _parse(buf, size)
                except _Bad as exc:
                    raise ModelLoadError(f"cannot load {path}: {exc}; the file is damaged or "
                                         f"not a usable GGUF model (re-download it)") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: "
                             f"{exc.strerror or exc}") from exc
    if len(_READ) >= 8:
        _READ.clear()
    _READ[key] = header
    return header


def check_gguf(path: str | Path) -> GgufHeader:
    """Raise :class:`ModelNotFound` (no such file) or :class:`ModelLoadError` unless ``path``
    is a GGUF file whose header llama.cpp can be trusted with; returns the header."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"model file not found: {path}")
    header = read_header(path)
    try:
        _check_hparams(header)
    except _Bad as exc:
        raise ModelLoadError(f"cannot load {path}: {exc}; the file is damaged or not a "
                             f"usable GGUF model (re-download it)") from None
    return header


def _not_gguf(path: Path, head: bytes) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a GGUF file (it starts with {head!r}); pass a .gguf "
                          f"embedding model")


def _parse(buf: Any, size: int) -> GgufHeader:
    r = _Reader(buf, size)
    r.pos = 4
    version = r.take("<I", "the version")
    if version not in VERSIONS:
        raise _Bad(f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
    n_tensors = r.take("<Q", "the tensor count")
    n_kv = r.take("<Q", "the metadata count")
    # each tensor info takes at least 8 + 1 + 4 + 8 + 4 + 8 bytes, each key/value 8 + 1 + 4 + 1
    if n_tensors > (size - r.pos) // 33:
        raise _Bad(f"tensor count {n_tensors:,} is impossible in a file of {size:,} bytes")
    if n_kv > (size - r.pos) // 14:
        raise _Bad(f"metadata count {n_kv:,} is impossible in a file of {size:,} bytes")
    header = GgufHeader(version, size=size)
    for i in range(n_kv):
        key = r.string(f"metadata key {i}")
        vtype = r.take("<I", f"the type of {key}")
        header.metadata[key] = r.value(vtype, key)
    for i in range(n_tensors):
        name = r.string(f"the name of tensor {i}")
        if len(name.encode()) >= MAX_NAME:
            raise _Bad(f"tensor {i}'s name is {len(name.encode())} bytes long (at most "
                       f"{MAX_NAME - 1})")
        n_dims = r.take("<I", f"the dimension count of tensor {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Bad(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS})")
        shape = tuple(r.take("<q", f"a dimension of tensor {name}") for _ in range(n_dims))
        ttype = r.take("<I", f"the type of tensor {name}")
        offset = r.take("<Q", f"the data offset of tensor {name}")
        if any(d < 0 for d in shape):
            raise _Bad(f"tensor {name} has a negative dimension {shape}")
        if ttype > MAX_TYPE:
            raise _Bad(f"tensor {name} has unknown type {ttype}")
        if name in header.tensors:
            raise _Bad(f"tensor {name} appears twice")
        header.tensors[name] = (ttype, shape, offset)
    alignment = header.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment {alignment!r} is not a power of two")
    header.data_start = (r.pos + alignment - 1) // alignment * alignment
    room = size - header.data_start
    for name, (ttype, shape, offset) in header.tensors.items():
        elements = 1
        for d in shape:
            elements *= d
        if elements >= 1 << 62:
            raise _Bad(f"tensor {name} has an impossible shape {shape}")
        if ttype not in TYPE_SIZES:
            continue
        block, width = TYPE_SIZES[ttype]
        if shape[0] % block:
            raise _Bad(f"tensor {name}'s rows ({shape[0]}) are not a whole number of its "
                       f"type's blocks ({block})")
        nbytes = elements // block * width
        if offset + nbytes > room:
            raise _Bad(f"tensor {name}'s data ({nbytes:,} bytes at offset {offset:,}) runs "
                       f"past the end of the file (truncated?)")
    return header


def _check_hparams(header: GgufHeader) -> None:
    """The architecture's sizes llama.cpp allocates and loops by, in sane ranges."""
    meta = header.metadata
    arch = meta.get("general.architecture")
    if arch is None:
        raise _Bad("general.architecture is missing")
    if not isinstance(arch, str) or not arch or len(arch) > 64:
        raise _Bad(f"general.architecture {arch!r} is not an architecture name")

    def number(key: str, low: int, high: int) -> int | None:
        name = f"{arch}.{key}"
        value = meta.get(name)
        if value is None or isinstance(value, Array):
            return None  # absent (llama.cpp says so), or one value per layer
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"{name} is {value!r}, not a whole number")
        if not low <= value <= high:
            raise _Bad(f"{name} is {value:,} (expected {low:,} to {high:,})")
        return value

    layers = number("block_count", 1, MAX_LAYERS)
    if layers is not None and layers > max(len(header.tensors), 1):
        raise _Bad(f"{arch}.block_count is {layers:,} but the file has only "
                   f"{len(header.tensors)} tensors")
    number("context_length", 1, MAX_CONTEXT)
    number("embedding_length", 1, MAX_EMBEDDING)
    number("embedding_length_out", 1, MAX_EMBEDDING)
    number("feed_forward_length", 0, MAX_FFN)
    heads = number("attention.head_count", 1, MAX_HEADS)
    kv_heads = number("attention.head_count_kv", 0, MAX_HEADS)
    if heads and kv_heads and heads % kv_heads:
        raise _Bad(f"{arch}.attention.head_count ({heads}) is not a multiple of "
                   f"{arch}.attention.head_count_kv ({kv_heads})")
    number("attention.key_length", 1, MAX_EMBEDDING)
    number("attention.value_length", 1, MAX_EMBEDDING)
    experts = number("expert_count", 0, MAX_EXPERTS)
    used = number("expert_used_count", 0, MAX_EXPERTS)
    if experts is not None and used is not None and used > experts:
        raise _Bad(f"{arch}.expert_used_count ({used}) is over {arch}.expert_count "
                   f"({experts})")
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, Array) and tokens.count == 0:
        raise _Bad("tokenizer.ggml.tokens is empty")


__all__ = ["Array", "GgufHeader", "check_gguf", "read_header"]
