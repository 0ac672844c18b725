"""Every CLI command is documented in the README, and the README's two set-up commands are
the ones CI runs."""

from __future__ import annotations

from pathlib import Path

import click

from gguf_embed.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def commands(group: click.Group, prefix: str = "gguf-embed") -> list[str]:
    out = []
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            out.extend(commands(command, full))
        else:
            out.append(full)
    return out


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    found = commands(cli)
    assert len(found) >= 7
    for full in found:
        *parents, name = full.split(" ")
        assert full in readme or (f"{' '.join(parents)} " in readme and f" {name}" in readme), full


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "\nscripts/test\n" in readme
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "gguf-embed index" in readme and "gguf-embed search" in readme
