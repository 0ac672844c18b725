"""Thin helpers over llama-cpp-python's ctypes API: backend start, logging, metadata, cores."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from functools import cache
from pathlib import Path
from typing import Any

from ._llama_binding import after_completion, lc
from .errors import ModelLoadError

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
    try:
        py_level = _LEVELS.get(level, _last_level[0])  # 5 = continue the previous line
        _last_level[0] = py_level
        if log.isEnabledFor(py_level):
            log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip("\n"))
    except BaseException as exc:  # ctypes would print it and carry on
        if _calls.error is None:
            _calls.error = exc  # raised by guarded() once llama.cpp returns


class _Calls(threading.local):
    depth = 0  # guarded() blocks this thread is in
    error: BaseException | None = None  # raised in _log_callback, not yet re-raised
    handlers: tuple[tuple[int, Any], ...] = ()  # (signal, its handler) held off (main thread)


_calls = _Calls()
# signals whose Python handler may raise (Ctrl-C; `watch` makes SIGTERM a KeyboardInterrupt)
_HOLD = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
_held: list[int] = []  # signals that arrived while held


def _hold(signum: int, frame: Any) -> None:
    _held.append(signum)


def _restore(handlers: tuple[tuple[int, Any], ...]) -> None:
    """Put every handler back, even if one put back raises at once (a signal of its own)."""
    if handlers:
        try:
            signal.signal(*handlers[-1])
        finally:
            _restore(handlers[:-1])


class _Guarded:
    """See :func:`guarded`; one instance serves every thread (its state is thread-local)."""

    def __enter__(self) -> None:
        calls = _calls
        if calls.depth == 0:
            error, calls.error = calls.error, None
            if error is not None:  # from a call into llama.cpp outside guarded()
                raise error
            if threading.current_thread() is threading.main_thread() \
                    and not sys.is_finalizing():
                del _held[:]  # any left by an exit that a KeyboardInterrupt cut short
                calls.handlers = ()
                try:
                    for signum in _HOLD:
                        if callable(signal.getsignal(signum)):
                            handler = signal.signal(signum, _hold)
                            calls.handlers += ((signum, handler),)
                except (ValueError, OSError):  # not the main interpreter
                    pass
                except BaseException:  # a signal not held yet
                    handlers, calls.handlers = calls.handlers, ()
                    _restore(handlers)
                    raise
        calls.depth += 1

    def __exit__(self, *exc: object) -> None:
        calls = _calls
        calls.depth -= 1
        if calls.depth:
            return
        error, calls.error = calls.error, None
        handlers, calls.handlers = calls.handlers, ()
        if handlers:
            _restore(handlers)
            held = _held[:]
            del _held[:]
            for signum in held:  # delivered late, to the handler they were meant for
                dict(handlers)[signum](signum, None)
        if error is not None:
            raise error


_GUARDED = _Guarded()


@lc.llama_progress_callback
def load_progress(progress: float, user_data: ctypes.c_void_p) -> bool:
    """A model load's progress callback (llama.cpp calls it once per tensor): the load stops
    at a Ctrl-C that :func:`guarded` holds for Python's default handler, which raises
    ``KeyboardInterrupt`` once the load has returned anyway.  A handler of the application's
    own (a graceful stop) gets the whole load."""
    return not (signal.SIGINT in _held
                and (signal.SIGINT, signal.default_int_handler) in _calls.handlers)


def guarded() -> _Guarded:
    """``with guarded(): ptr = lc.llama_...(...)`` around every call into llama.cpp that may
    log: an exception raised in :func:`_log_callback` (a ctypes callback, whose exceptions
    ctypes prints and drops) is raised here as soon as llama.cpp returns.

    Ctrl-C above all: Python runs SIGINT's handler at the next bytecode, which during a call
    into llama.cpp is the log callback's first line, outside any ``try`` of its own; its
    ``KeyboardInterrupt`` was lost and a model load went on to the end.  So, on the main
    thread, the Python handlers of SIGINT and SIGTERM are held off for the call: a signal is
    noted and handed to its handler once the call has returned *and its result is stored*
    (an interrupted load frees the model it got).  Other threads never run signal handlers."""
    return _GUARDED


@cache
def backend() -> None:
    """Start llama.cpp once per process and route its log to Python logging."""
    lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
    after_completion(lambda: lc.llama_log_set(_log_callback, ctypes.c_void_p(0)))
    with guarded():
        load_backends()
        lc.llama_backend_init()


def lib_dir() -> Path:
    """Where llama-cpp-python keeps libllama and libggml."""
    return Path(lc.__file__).parent / "lib"


@cache
def _ggml() -> Any:
    """ggml's functions (its backend registry) as libllama uses them; None if not found.

    They are looked up through libllama's own handle: ``dlsym`` on a handle also searches that
    library's dependencies, so this is the libggml that llama.cpp runs on. Opening
    ``lib/libggml.so`` by path would load a second copy with a registry of its own, because a
    wheel holds copies of ``libggml.so`` and ``libggml.so.0``, not symlinks. (Windows does not
    search dependencies that way, but loads a DLL once per name.)"""
    if os.name == "nt":
        names = [lib_dir() / "ggml.dll"]
    else:
        loaded: str | None = getattr(getattr(lc, "_lib", None), "_name", None)  # the binding
        names = [Path(loaded)] if loaded else []
        names += sorted(lib_dir().glob("libllama.so")) + sorted(lib_dir().glob("libllama.dylib"))
    names = [n for n in names if n.exists()]
    if not names:
        return None
    try:
        lib = ctypes.CDLL(str(names[0]))
        lib.ggml_backend_reg_count.restype = ctypes.c_size_t
        lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_load_all_from_path.restype = None
        lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
        lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                                ctypes.POINTER(ctypes.c_size_t)]
    except (OSError, AttributeError):
        return None
    return lib


def load_backends() -> None:
    """Load ggml's backends from llama-cpp-python's lib folder when it was built with
    ``GGML_BACKEND_DL`` (the ``cpu-dispatch`` preset: one CPU library per x86 generation, the
    best one for this CPU picked by score). llama.cpp's own ``ggml_backend_load_all`` looks
    beside the Python executable and in the working directory, never there. A no-op for a
    build with the backends linked in: they are registered already."""
    lib = _ggml()
    if lib is None or lib.ggml_backend_reg_count() > 0:
        return
    lib.ggml_backend_load_all_from_path(str(lib_dir()).encode())
    if lib.ggml_backend_reg_count() == 0:
        raise ModelLoadError(
            f"llama-cpp-python was built with dynamically loaded backends (GGML_BACKEND_DL) but "
            f"no libggml-cpu* library loads from {lib_dir()}; reinstall it with "
            f"`python -m scripts.install_llama --preset cpu-dispatch` (or `--preset cpu`)")


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _library_of(address: int) -> str | None:
    """The shared library file that holds ``address`` (dladdr; POSIX only)."""
    try:
        libc = ctypes.CDLL(None)
        dladdr = libc.dladdr
    except (OSError, AttributeError, TypeError):
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def cpu_backend() -> dict[str, Any]:
    """Which CPU kernels ggml runs, read from its backend registry: ``variant`` is the
    ``GGML_CPU_ALL_VARIANTS`` library picked at run time (``haswell``, ``icelake``, ``zen4``,
    ...) or ``built-in`` for a build whose kernels were fixed at compile time; ``features``
    are the instruction sets that library was compiled for; ``library`` is its file."""
    backend()
    lib = _ggml()
    reg = lib.ggml_backend_reg_by_name(b"CPU") if lib is not None else None
    if not reg:
        return {"variant": None, "features": [], "library": None}
    fn = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    features: list[str] = []
    if fn:
        get = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(fn)
        table = get(reg)
        i = 0
        while table and table[i].name is not None:
            name, value = table[i].name.decode(), (table[i].value or b"").decode()
            features.append(name if value == "1" else f"{name}={value}")
            i += 1
    library = _library_of(fn) if fn else None
    stem = Path(library).name.split(".")[0] if library else ""
    variant = stem.removeprefix("libggml-cpu-").removeprefix("ggml-cpu-") \
        if stem.startswith(("libggml-cpu-", "ggml-cpu-")) else "built-in"
    return {"variant": variant, "features": features, "library": library}


AMX_CPU_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's instruction-set flags from ``cpuinfo`` (Linux); None where they cannot be
    read (macOS, Windows, or a kernel whose cpuinfo has no ``flags`` line)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return None


def extra_bufts_rule(features: list[str], flags: frozenset[str] | None) -> tuple[bool, str]:
    """Whether llama.cpp may use the CPU backend's extra buffer types, and why.

    The extra buffer types are weight layouts chosen at load time: ggml's repacked int8 GEMM
    layouts (a speed-up kept on every CPU without AMX) and, in a CPU library compiled with AMX
    kernels (feature ``AMX_INT8``: ``-march=native`` on a Xeon, ``GGML_CPU_ALL_VARIANTS``'
    ``sapphirerapids``, a wheel someone else built), the AMX buffer, whose matmul
    (``ggml_backend_amx_mul_mat``) segfaults on quantized models (llama.cpp #20824). ggml only
    offers that buffer when the CPU has AMX, so they are turned off, for every model (the AMX
    buffer takes F16 weights too; llama.cpp has one switch, not one per type), exactly when
    the loaded library has AMX kernels and the CPU has AMX or its flags cannot be read."""
    if not any(f.split("=")[0].startswith("AMX") for f in features):
        return True, "on: the CPU backend has no AMX kernels"
    if flags is not None and not flags & AMX_CPU_FLAGS:
        return True, "on: the CPU backend has AMX kernels but this CPU has no AMX"
    cpu = "this CPU has AMX" if flags is not None else "this CPU's flags cannot be read"
    return False, (f"off: the CPU backend has AMX kernels and {cpu}; its AMX matmul segfaults "
                   f"on quantized models (llama.cpp #20824)")


@cache
def use_extra_bufts() -> tuple[bool, str]:
    """:func:`extra_bufts_rule` for the CPU backend loaded in this process and this CPU."""
    return extra_bufts_rule(cpu_backend()["features"], cpu_flags())


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


# Parameters × tokens one thread takes in a decode (~20 ms on one core): a decode with less
# work is shared by fewer threads.  llama.cpp's threads meet at a barrier after every op, spin-
# waiting: a small decode gains little from a second thread on an idle host, and on a busy one
# (a build, a browser) a thread that is not running makes the others wait its turn at each
# barrier: a one-shot MiniLM query took 460-700 ms with two threads on a 2-core host busy with
# other work, 290-310 ms with one (BENCHMARKS.md, "One-shot start-up").
WORK_PER_THREAD = 1_000_000_000


def threads_for(model: Any, tokens: int, most: int) -> int:
    """How many of ``most`` threads a decode of ``tokens`` tokens by ``model`` uses."""
    work = int(lc.llama_model_n_params(model)) * tokens
    return max(1, min(most, -(-work // WORK_PER_THREAD)))


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
    backend()  # a BACKEND_DL build lists nothing before its backends are loaded
    return lc.llama_print_system_info().decode("utf-8", "replace")


def supports_gpu_offload() -> bool:
    backend()
    return bool(lc.llama_supports_gpu_offload())


def devices() -> list[dict[str, Any]]:
    """ggml's compute devices (CPU, CUDA GPUs, ...) with their memory, via libggml."""
    backend()
    lib = _ggml()
    if lib is None:
        return []
    try:
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
