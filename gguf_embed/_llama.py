"""Thin helpers over llama-cpp-python's ctypes API: backend start, logging, metadata, cores."""

from __future__ import annotations

import ctypes
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

import llama_cpp as lc

log = logging.getLogger("gguf_embed.llama")
logging.getLogger("gguf_embed").addHandler(logging.NullHandler())  # a library never prints

# ggml_log_level: 0 NONE, 1 DEBUG, 2 INFO, 3 WARN, 4 ERROR, 5 CONT (continues the last line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING,
           4: logging.ERROR}
_last_level = [logging.DEBUG]


@lc.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp's log goes to the "gguf_embed.llama" logger; nothing is printed unless the
    # application (the CLI with --verbose) attaches a handler.
    py_level = _LEVELS.get(level, _last_level[0])  # 5 = continue the previous line
    _last_level[0] = py_level
    if log.isEnabledFor(py_level):
        log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip("\n"))


@cache
def backend() -> None:
    """Start llama.cpp once per process and route its log to Python logging."""
    lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
    lc.llama_backend_init()


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads slow llama.cpp down)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows: no topology to read
        return os.cpu_count() or 1
    cores: set[str] = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def model_metadata(model: Any) -> dict[str, str]:
    """Every key/value of a loaded model's GGUF header, as strings."""
    meta: dict[str, str] = {}
    buf = ctypes.create_string_buffer(1024)
    for i in range(lc.llama_model_meta_count(model)):
        n = lc.llama_model_meta_key_by_index(model, i, buf, ctypes.sizeof(buf))
        if n < 0:
            continue
        key = buf.value.decode("utf-8", "replace")
        n = lc.llama_model_meta_val_str_by_index(model, i, buf, ctypes.sizeof(buf))
        meta[key] = buf.value.decode("utf-8", "replace") if n >= 0 else ""
    return meta


def is_rank_model(model: Any, metadata: dict[str, str], arch: str) -> bool:
    """Whether a loaded GGUF is marked a reranker: rank pooling, or classifier labels (an
    array key, which llama.cpp's metadata listing leaves out)."""
    return (metadata.get(f"{arch}.pooling_type") == "4"
            or lc.llama_model_cls_label(model, 0) is not None)


def system_info() -> str:
    return lc.llama_print_system_info().decode("utf-8", "replace")


def supports_gpu_offload() -> bool:
    return bool(lc.llama_supports_gpu_offload())


def devices() -> list[dict[str, Any]]:
    """ggml's compute devices (CPU, CUDA GPUs, ...) with their memory, via libggml."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    names = sorted(folder.glob("libggml.so*")) + sorted(folder.glob("libggml.dylib")) + sorted(
        folder.glob("ggml.dll"))
    if not names:
        return []
    try:
        lib = ctypes.CDLL(str(names[0]))
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                                ctypes.POINTER(ctypes.c_size_t)]
        out = []
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            out.append({"name": lib.ggml_backend_dev_name(dev).decode(),
                        "description": lib.ggml_backend_dev_description(dev).decode(),
                        "memory_free": free.value, "memory_total": total.value})
        return out
    except (OSError, AttributeError):
        return []
