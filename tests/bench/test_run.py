"""`python -m bench.run`: one failing benchmark does not lose the rows of the others."""

import json
from pathlib import Path
from typing import Any

import pytest

import bench.data
from bench import run
from bench.common import Row


def test_a_failing_benchmark_becomes_a_failed_row_and_the_others_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_bench(name: str, *args: Any) -> tuple[list[Row], dict[str, Any]]:
        if name == "scale":
            raise RuntimeError("scale point 20000/100000 failed:\naddress already in use")
        return [Row(name, "rate", 123.0, "events/s")], {"samples": 1}

    info = {"nproc": 2, "cpu": "test", "memory_gib": 1, "python": "3", "kafka": "-", "load_average_at_start": 0.0}
    monkeypatch.setattr(run, "OUT", tmp_path)
    monkeypatch.setattr(run, "machine", lambda: info)
    monkeypatch.setattr(run, "run_bench", fake_bench)
    monkeypatch.setattr(bench.data, "sim_dataset", lambda *args, **kwargs: None)

    assert run.main(["--only", "core", "--only", "scale", "--only", "verify"]) == 1

    results = json.loads((tmp_path / "results.json").read_text())
    assert [(row["bench"], row["metric"], row["met"]) for row in results["rows"]] == [
        ("core", "rate", None),
        ("scale", "benchmark failed", False),
        ("verify", "rate", None),
    ]
    assert results["rows"][1]["note"] == "scale point 20000/100000 failed:"
    assert "address already in use" in results["details"]["scale"]["error"]
    assert "failed: scale" in capsys.readouterr().err
