"""Start-up: ``import gguf_embed`` loads nothing heavy, the CLI imports only the module of the
command it runs, and a Ctrl-C while anything imports is ``Interrupted.`` with exit 130 (a
traceback before: ``gguf_embed/__init__`` imported numpy and the index before any handler)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gguf_embed
from tests.support.interrupt_scripts import FINDER, SCRIPT
from tests.support.small_index import small_index

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
HEAVY = ["numpy", "apsw", "llama_cpp", "faiss", "sqlite_vec", "click", "gguf_embed.index"]


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env=ENV)


def test_import_gguf_embed_loads_nothing_heavy() -> None:
    out = run(f"import sys, json, gguf_embed; print(json.dumps([m for m in {HEAVY!r} "
              f"if m in sys.modules]))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_importing_the_cli_loads_no_numpy_sqlite_or_llama_cpp() -> None:
    """What runs before the CLI's Ctrl-C handling is in place stays small (click only)."""
    out = run(f"import sys, json, gguf_embed.cli; print(json.dumps([m for m in {HEAVY!r} "
              f"if m in sys.modules]))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["click"]


def test_public_names_load_on_first_use_and_are_listed() -> None:
    code = ("import sys, gguf_embed; assert 'gguf_embed.index' not in sys.modules; "
            "from gguf_embed import Index, InputError, SearchResult; "
            "import gguf_embed.index, gguf_embed.errors, gguf_embed.search; "
            "assert Index is gguf_embed.index.Index and InputError is gguf_embed.errors.InputError"
            "; assert SearchResult is gguf_embed.search.SearchResult; print('ok')")
    out = run(code)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
    assert set(gguf_embed.__all__) <= set(dir(gguf_embed))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        gguf_embed.Nope  # noqa: B018


# The CLI as its script runs it, ``expression`` evaluated as the process ends: a search ends
# it inside main() (cli/_exit.py), after the atexit handlers have run.
AT_EXIT = ("import atexit, sys, json; from gguf_embed.cli import main; sys.argv[0] = 'gguf-embed'\n"
           "atexit.register(lambda: {})\nmain()\n")


def test_a_keyword_search_imports_neither_llama_cpp_nor_the_server(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    code = AT_EXIT.format(
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('llama_cpp', 'faiss', 'uvicorn', 'starlette', 'mcp', 'watchfiles') or m in "
        "('gguf_embed.server', 'gguf_embed.watch', 'gguf_embed.cli._serve', "
        "'gguf_embed.cli._watch', 'gguf_embed.cli._doctor'))))")
    out = run(code, "search", "otters", "--db", str(db), "--mode", "keyword")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "a.md" in out.stdout
    assert json.loads(lines[-1]) == []


# What a search never needs: the indexer and what only it uses (the walk with its ignore rules,
# the extractors, the executors), merging, the models' hashing, the help's default path, and the
# sqlite_vec package (its __init__ imports sqlite3 and numpy.typing; its extension is loaded by
# path).  Each of these was imported by a keyword search before (store_open, index, cli._index).
NOT_FOR_SEARCH = ["gguf_embed.indexer", "gguf_embed.executor", "gguf_embed.protocol",
                  "gguf_embed.walk", "gguf_embed.extract", "gguf_embed.merge",
                  "gguf_embed.engine", "gguf_embed.reranker", "gguf_embed.cli._index",
                  "pathspec", "llama_cpp", "sqlite_vec", "sqlite3", "platformdirs", "hashlib",
                  "html.parser", "tempfile"]
LOADED = ("print('LOADED ' + json.dumps([m for m in {names!r} if m in sys.modules]))")


def _loaded(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADED "))
    return list(json.loads(line[len("LOADED "):]))


def test_a_cli_keyword_search_imports_only_what_searching_needs(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    code = AT_EXIT.format(LOADED.format(names=NOT_FOR_SEARCH))
    out = run(code, "search", "otters", "--db", str(db), "--mode", "keyword")
    assert "a.md" in out.stdout
    assert _loaded(out) == []


def test_a_library_keyword_search_imports_only_what_searching_needs(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    code = ("import sys, json; from gguf_embed import Index\n"
            "with Index(sys.argv[1], readonly=True) as index:\n"
            "    print([h.path for h in index.search('otters', mode='keyword')])\n"
            + LOADED.format(names=NOT_FOR_SEARCH))
    out = run(code, str(db))
    assert "a.md" in out.stdout
    assert _loaded(out) == []


def test_what_writing_needs_still_loads_when_asked(tmp_path: Path) -> None:
    """The names moved behind imports in functions are still there for the code that
    writes (and for ``from gguf_embed.index import IndexSummary``)."""
    code = ("import sys, json; import gguf_embed.index as m\n"
            "from gguf_embed.index import IndexSummary, Progress\n"
            "import gguf_embed.indexer as i; assert IndexSummary is i.IndexSummary\n"
            "assert Progress is i.Progress\n"
            "from gguf_embed.walk import Bounds, Link; import gguf_embed.bounds as b\n"
            "assert Bounds is b.Bounds and Link is b.Link\n"
            "from gguf_embed.store_open import vec_extension; import sqlite_vec\n"
            "assert vec_extension() == sqlite_vec.loadable_path(); print('ok')")
    out = run(code)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import gguf_embed.index as index_module

        index_module.Nope  # noqa: B018


ENGINE_THEN_PACKAGE = """
import sys
from gguf_embed.engine import Engine
with Engine(sys.argv[1]) as engine:
    vector = engine.encode(["otters"], query=True).vectors[0]
high = ("llama_cpp.llama", "jinja2", "diskcache")
print("HIGH_LEVEL", sorted(m for m in high if m in sys.modules))
import llama_cpp
from llama_cpp import Llama
print("PACKAGE", Llama is llama_cpp.Llama, isinstance(llama_cpp.__version__, str),
      llama_cpp.llama_backend_init is llama_cpp.llama_cpp.llama_backend_init, len(vector))
with Engine(sys.argv[1]) as engine:  # llama.cpp's log still ours (silent), not the package's
    engine.encode(["otters"])
"""


def test_the_engine_loads_llama_cpps_binding_without_its_high_level_api(
        qwen_path: Path) -> None:
    """llama-cpp-python's ``__init__`` also imports ``Llama`` with jinja2 and diskcache
    (~50 ms of a one-shot search); the engine needs only the ctypes binding.  An app that
    imports ``llama_cpp`` afterwards still gets the whole package."""
    out = run(ENGINE_THEN_PACKAGE, str(qwen_path))
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert out.stderr == ""  # llama.cpp's log goes to Python logging, silent by default
    assert lines["HIGH_LEVEL"] == "[]"
    assert lines["PACKAGE"] == "True True True 256"


def test_the_engine_works_where_the_app_imported_llama_cpp_first(qwen_path: Path) -> None:
    out = run("import llama_cpp, sys\n" + ENGINE_THEN_PACKAGE.replace("import sys\n", ""),
              str(qwen_path))
    assert out.returncode == 0, out.stderr
    assert "PACKAGE True True True 256" in out.stdout and out.stderr == ""


# A Ctrl-C at the moment a module is imported: a finder that raises KeyboardInterrupt there,
# where SIGINT's default handler would raise it.
INTERRUPT = FINDER + SCRIPT


@pytest.mark.parametrize("module", ["click", "numpy", "gguf_embed.index",
                                    "gguf_embed.cli._search"])
def test_ctrl_c_while_the_cli_imports_is_one_line_and_exit_130(tmp_path: Path,
                                                                module: str) -> None:
    out = run(INTERRUPT.format(name=module), "search", "otters", "--db",
              str(tmp_path / "i.db"), "--mode", "keyword")
    assert out.returncode == 130, out.stderr
    assert out.stderr == "Interrupted.\n"
    assert out.stdout == ""


def test_the_cli_gives_openblas_one_thread_unless_the_user_chose() -> None:
    code = ("import os, sys; from gguf_embed.cli import main; sys.argv = ['gguf-embed', "
            "'--version']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "import numpy; print(os.environ['OPENBLAS_NUM_THREADS'])")
    env = {k: v for k, v in ENV.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "1", out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**env, "OPENBLAS_NUM_THREADS": "4"})
    assert out.stdout.splitlines()[-1] == "4", out.stderr
