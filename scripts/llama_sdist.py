"""Where the llama-cpp-python source and built wheels are cached for development and CI.

Shared by ``install_llama.py`` (builds the wheel once per preset), ``build_llama_tools.py``,
and the model makers (llama.cpp's own ``convert_hf_to_gguf.py`` from the same source).

    python -m scripts.llama_sdist     # prints the unpacked source folder (downloads it once)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CACHE = Path(os.environ.get("GGUF_EMBED_DEV_CACHE", Path.home() / ".cache" / "gguf-embed-dev"))


def sdist_tarball(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The llama-cpp-python sdist, downloaded from PyPI once."""
    folder = CACHE / "sdist"
    tarball = folder / f"llama_cpp_python-{version}.tar.gz"
    if not tarball.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-d", str(folder), f"llama-cpp-python=={version}"],
            check=True, stdout=sys.stderr,
        )
    return tarball


def source_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The unpacked sdist (for ``vendor/llama.cpp/convert_hf_to_gguf.py``)."""
    root = CACHE / "src"
    target = root / f"llama_cpp_python-{version}"
    if not (target / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist_tarball(version)) as tar:
            tar.extractall(root, filter="data")
    return target


def llama_cpp_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return source_dir(version) / "vendor" / "llama.cpp"


if __name__ == "__main__":
    print(source_dir())
