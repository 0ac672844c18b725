"""The built wheel carries the whole package: a non-editable install must work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_has_every_module_and_data_file(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a clean copy: a stale build/ in the checkout could hide a miss
    shutil.copytree(ROOT / "gguf_embed", src / "gguf_embed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                    "--no-build-isolation", "--quiet", "-w", str(tmp_path)],
                   check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("gguf_embed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "gguf_embed"
    wanted = [p for p in package.rglob("*") if p.suffix in (".py", ".json", ".typed")
              and "__pycache__" not in p.parts]
    assert any(p.parent.name == "cli" for p in wanted)
    assert any(p.parent.name == "references" for p in wanted)
    missing = [str(p.relative_to(ROOT)) for p in wanted
               if p.relative_to(ROOT).as_posix() not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # Apache-2.0 text
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gguf-embed = gguf_embed.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
