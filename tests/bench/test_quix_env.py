"""bench/quix_env.py: the Quix Streams baseline's own environment (made once, skipped without PyPI) and its rows."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import quix_env
from bench.quix_env import QUIX_VERSION, quix_python, quix_rows


def test_reuses_a_stamped_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "quix-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / f"quixstreams-{QUIX_VERSION}.installed").write_text("")

    def no_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is installed again")

    monkeypatch.setattr(quix_env.subprocess, "run", no_run)
    assert quix_python(venv) == (venv / "bin" / "python", "")


def test_failed_install_skips_and_leaves_no_half_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "quix-venv"
    (venv / "bin").mkdir(parents=True)  # an interrupted earlier install: no stamp
    calls: list[list[str]] = []

    def run(step: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(step)
        if "venv" in step:
            assert not venv.exists()  # the half venv was removed first
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").write_text("")
            return subprocess.CompletedProcess(step, 0, "", "")
        return subprocess.CompletedProcess(step, 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")

    monkeypatch.setattr(quix_env.subprocess, "run", run)
    python, why = quix_python(venv)
    assert python is None
    assert (
        why
        == f"pip install quixstreams=={QUIX_VERSION} (PyPI unreachable?) failed: ERROR: No matching distribution found"
    )
    assert len(calls) == 2 and calls[1][-1] == f"quixstreams=={QUIX_VERSION}"
    assert not venv.exists()


def test_install_writes_the_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "quix-venv"

    def run(step: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "venv" in step:
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").write_text("")
        return subprocess.CompletedProcess(step, 0, "", "")

    monkeypatch.setattr(quix_env.subprocess, "run", run)
    assert quix_python(venv) == (venv / "bin" / "python", "")
    assert (venv / f"quixstreams-{QUIX_VERSION}.installed").exists()


def test_rows_compare_the_worker_with_the_best_run() -> None:
    runs = [
        {"events": 100_000, "seconds": 4.0, "cpu_seconds": 4.0, "rate": 25_000.0},
        {"events": 100_000, "seconds": 2.5, "cpu_seconds": 2.0, "rate": 40_000.0},
    ]
    baseline, ratio = quix_rows(runs, "", (110_000.0, 200_000.0), 90_000.0)
    assert baseline.metric == "Quix Streams baseline (simpler job)" and baseline.value == 40_000.0
    assert "best of 2" in baseline.note and QUIX_VERSION in baseline.note
    assert ratio.metric == "worker / Quix" and ratio.target == ">= 2.5x"
    assert ratio.value == pytest.approx(2.75) and ratio.met is True
    assert "per CPU-s 4.00x" in ratio.note and "whole run 2.25x" in ratio.note
    _, below = quix_rows(runs, "", (90_000.0, 200_000.0), 90_000.0)
    assert below.met is False


def test_rows_when_skipped() -> None:
    baseline, ratio = quix_rows([], "pip install failed: offline", None, 90_000.0)
    assert baseline.value is None and ratio.value is None and ratio.met is None
    assert baseline.note == "skipped: pip install failed: offline"
