"""Which path answered: a function wrapped to record, call by call, whether it gave an answer."""

from __future__ import annotations

from typing import Any

import pytest


def answers(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[bool]:
    """Replace ``owner.name`` by a wrapper that calls it and appends to the returned list
    whether it answered (returned something other than None)."""
    real = getattr(owner, name)
    calls: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(owner, name, spy)
    return calls
