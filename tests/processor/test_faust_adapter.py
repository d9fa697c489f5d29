"""processor.faust_adapter: the startup self-check names what an upgrade removed, and the faust-streaming range it
states is the one pyproject.toml pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from processor import faust_adapter
from processor.faust_adapter import TESTED_WITH, FaustIncompatible, self_check

ROOT = Path(__file__).resolve().parents[2]


def test_self_check_passes_with_the_installed_faust() -> None:
    self_check()


def test_self_check_names_the_missing_internals_and_the_tested_range(monkeypatch: pytest.MonkeyPatch) -> None:
    required = (
        *faust_adapter._REQUIRED,
        ("faust.app.base:App", "no_such_member"),
        ("faust.no_such_module:Thing", "anything"),
    )
    monkeypatch.setattr(faust_adapter, "_REQUIRED", required)
    with pytest.raises(FaustIncompatible) as raised:
        self_check()
    message = str(raised.value)
    assert "lacks App.no_such_member, faust.no_such_module:Thing," in message, message
    assert f"tested with {TESTED_WITH}" in message, message


def test_the_stated_range_is_the_pinned_one() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    faust = [Requirement(line) for line in listed if Requirement(line).name == "faust-streaming"]
    assert len(faust) == 1, listed
    name, _, stated = TESTED_WITH.partition(" ")
    assert name == "faust-streaming", TESTED_WITH
    assert SpecifierSet(stated) == faust[0].specifier, (TESTED_WITH, str(faust[0]))
