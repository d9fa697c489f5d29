"""The Python examples of docs/analysts.md that read the sink's Parquet files run on a real sink directory and give
the snapshot's rows (the Spark and pandas examples need packages the project does not install: not run here)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import FunctionType

import duckdb
import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "analysts.md"
SECTION = DOC.read_text().split("## Without a snapshot: the Parquet files\n", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"^```python\n(.*?)^```", SECTION, re.S | re.M)
RUNNABLE = [block for block in BLOCKS if "pyspark" not in block and "import pandas" not in block]
DOC_DATA = "/var/lib/ccmeter/data"


def test_the_section_has_examples_for_each_engine() -> None:
    assert len(RUNNABLE) >= 2 and len(BLOCKS) > len(RUNNABLE)
    for engine in ("### DuckDB", "### pyarrow and pandas", "### Spark", "### Trino", "### Layout"):
        assert engine in SECTION
    assert all(DOC_DATA in block for block in BLOCKS)


@pytest.fixture(scope="module")
def namespace(sink_dir: Path) -> dict[str, object]:
    """What the runnable examples define, run in order against `sink_dir`."""
    names: dict[str, object] = {"__name__": "analysts_docs"}
    for block in RUNNABLE:
        exec(compile(block.replace(DOC_DATA, str(sink_dir)), str(DOC), "exec"), names)  # our own docs
    return names


def test_pyarrow_example_reads_the_snapshots_rows(namespace: dict[str, object], snapshot_path: Path) -> None:
    with duckdb.connect(str(snapshot_path), read_only=True) as con:
        expected = {
            "events": con.execute("SELECT count(*) FROM events").fetchall()[0][0],
            "changes": con.execute("SELECT count(*) FROM usage_changes").fetchall()[0][0],
            "intervals": con.execute("SELECT count(*) FROM user_intervals").fetchall()[0][0],
        }
        closed = con.execute("SELECT interval_id, epoch_ms(end_at) FROM user_intervals").fetchall()
    assert {name: namespace[name].num_rows for name in expected} == expected
    intervals = namespace["intervals"]
    ends = [None if end is None else int(end.timestamp() * 1000) for end in intervals["end_at"].to_pylist()]
    assert sorted(zip(intervals["interval_id"].to_pylist(), ends, strict=True), key=repr) == sorted(closed, key=repr)
    assert namespace["changes"].column_names[-1] == "date"  # the hive partition


def test_committed_leaves_out_files_beyond_the_manifest(
    namespace: dict[str, object], sink_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sink_dir / "usage_changes", data / "usage_changes")
    day = next((data / "usage_changes").glob("date=*"))
    extra = day / "usage-changes-p0-999999-1000000.parquet"  # not (yet) committed: beyond the manifest's offset
    hidden = day / ".usage-changes-p0-0-0.parquet.tmp-1"  # being written
    extra.write_bytes(b"")
    hidden.write_bytes(b"")
    names = dict(namespace, DATA=data)  # the example's functions read the module-level DATA
    committed = FunctionType(namespace["committed"].__code__, names)
    files = committed("usage_changes")
    assert len(files) == len(list((sink_dir / "usage_changes").glob("date=*/*.parquet")))
    assert str(extra) not in files and str(hidden) not in files
