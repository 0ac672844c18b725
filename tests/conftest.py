"""Shared fixtures: the generated test models (built by tests/support/build_models.py) and the
test corpus committed in tests/data (tldr pages, a PDF, CJK pages; see tests/data/README.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.build_models import OUTPUTS as NEEDED

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DATA = ROOT / "tests" / "data"

# Tests Ctrl-C real gguf-embed subprocesses. A suite started in the background (`cmd &`, nohup)
# has SIGINT ignored, the children inherit that, and Python then installs no KeyboardInterrupt
# handler in them: they would never stop. A terminal's Ctrl-C reaches a default handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not all((MODELS / name).exists() for name in NEEDED):
        subprocess.run([sys.executable, "-m", "tests.support.build_models"], check=True,
                       cwd=ROOT)
    return MODELS


@pytest.fixture(scope="session")
def minilm_path(models_dir: Path) -> Path:
    return models_dir / "all-minilm-l6-v2-f16.gguf"


@pytest.fixture(scope="session")
def qwen_path(models_dir: Path) -> Path:
    return models_dir / "tiny-qwen3-f32.gguf"


@pytest.fixture(scope="session")
def minilm(minilm_path: Path):
    from gguf_embed import Engine

    with Engine(minilm_path) as engine:
        yield engine


@pytest.fixture(scope="session")
def qwen(qwen_path: Path):
    from gguf_embed import Engine

    with Engine(qwen_path) as engine:
        yield engine


@pytest.fixture(scope="session")
def corpora() -> Path:
    """tests/data: the same layout as the shared corpora (tldr-linux/pages, tldr-cjk, pdf)."""
    return DATA
