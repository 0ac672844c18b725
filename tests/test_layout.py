"""The repository's layout (issue 10 point 7): scripts are tools for people run as
``python -m scripts.NAME``, test infrastructure lives in ``tests/support``, nothing edits
``sys.path``, and every command the docs give names a module that exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.build_models import OUTPUTS

ROOT = Path(__file__).resolve().parent.parent
PYTHON_FILES = sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py")])
TEXTS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md"),
                *(ROOT / "scripts").glob("*.py"), *(ROOT / "scripts").rglob("*.sh"),
                ROOT / "scripts" / "test", *(ROOT / "tests" / "support").glob("*.py")])
MODULE = re.compile(r"python3? -m\s+((?:scripts|tests\.support)\.[a-z_]+)")
BY_PATH = re.compile(r"python3? (?:scripts|tests)/[a-z_/]+\.py")


def test_nothing_edits_sys_path() -> None:
    for path in PYTHON_FILES:
        if path.name == "test_layout.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, f"{path.relative_to(ROOT)} edits sys.path"


def test_every_documented_command_names_a_module_run_with_dash_m() -> None:
    named = set()
    for path in TEXTS:
        text = path.read_text(encoding="utf-8")
        assert not BY_PATH.search(text), \
            f"{path.relative_to(ROOT)}: {BY_PATH.search(text)[0]!r}: use python -m"  # type: ignore[index]
        named.update(MODULE.findall(text))
    assert "scripts.install_llama" in named and "tests.support.build_models" in named
    for module in named:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"no module {module}"


def test_every_script_is_in_the_development_guide() -> None:
    guide = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "scripts").glob("*.py")):
        if "__main__" in path.read_text(encoding="utf-8") and path.stem != "bench_sizes_child":
            assert path.stem in guide, f"docs/development.md does not name {path.name}"


def test_the_test_models_the_tests_name_are_built() -> None:
    """Every test-model file a test names is made by tests.support.build_models (which
    scripts/test runs), so a fresh clone has it."""
    wanted = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        wanted.update(re.findall(r"(?:tiny|all-minilm)-[a-z0-9_-]+\.gguf",
                                 path.read_text(encoding="utf-8")))
    assert wanted and wanted <= set(OUTPUTS), sorted(wanted - set(OUTPUTS))
