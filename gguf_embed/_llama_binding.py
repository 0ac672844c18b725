"""llama-cpp-python's ctypes binding, ``llama_cpp.llama_cpp``, without the package's
``__init__``: that also imports the high-level ``Llama`` (jinja2, diskcache, multiprocessing;
~50 ms of a one-shot search on a 2-core host) that gguf-embed never uses.

Where ``llama_cpp`` is not imported yet, the package is registered without running its
``__init__``, which runs (once) when a name the package has not got yet is asked for, so
``import llama_cpp; llama_cpp.Llama(...)`` elsewhere in the same process works as ever.  Where
it is imported already, its binding is simply the one used.

    from ._llama_binding import lc   # every module that calls llama.cpp
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

PACKAGE = "llama_cpp"
_lock = threading.RLock()
_hooks: list[Callable[[], None]] = []  # run after the package's __init__ has run


def after_completion(hook: Callable[[], None]) -> None:
    """Run ``hook`` whenever the package's ``__init__`` runs after this call: it installs its
    own llama.cpp log callback, which prints everything on stderr; ours (``_llama.backend``)
    is set again."""
    with _lock:
        _hooks.append(hook)


def binding() -> ModuleType:
    """``llama_cpp.llama_cpp``, imported without the package's ``__init__`` where possible."""
    with _lock:
        if PACKAGE not in sys.modules:
            spec = importlib.util.find_spec(PACKAGE)
            if spec is None or spec.loader is None or spec.submodule_search_locations is None:
                raise ImportError("llama-cpp-python is not installed: pip install gguf-embed "
                                  "installs it")
            package = importlib.util.module_from_spec(spec)
            package.__getattr__ = _completion(package)  # type: ignore[method-assign]
            sys.modules[PACKAGE] = package
            try:
                return importlib.import_module(f"{PACKAGE}.llama_cpp")
            except BaseException:
                if sys.modules.get(PACKAGE) is package:
                    del sys.modules[PACKAGE]
                raise
    return importlib.import_module(f"{PACKAGE}.llama_cpp")


def _completion(package: ModuleType) -> Any:
    """The package's module ``__getattr__`` (PEP 562) until its ``__init__`` has run: runs it
    once, then answers from the completed package."""

    def complete(name: str) -> Any:
        with _lock:
            if package.__dict__.get("__getattr__") is complete:
                del package.__getattr__
                try:
                    spec = package.__spec__
                    assert spec is not None and spec.loader is not None
                    spec.loader.exec_module(package)
                except BaseException:
                    package.__getattr__ = complete  # type: ignore[method-assign]
                    raise
                for hook in _hooks:
                    hook()
        return getattr(package, name)

    return complete


if TYPE_CHECKING:
    import llama_cpp.llama_cpp as lc
else:
    lc = binding()

__all__ = ["after_completion", "binding", "lc"]
