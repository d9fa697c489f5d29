"""Every ```sql block of docs/analysts.md runs against a real snapshot (read-only) and returns rows."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "analysts.md"
BLOCKS = re.findall(r"^```sql\n(.*?)^```", DOC.read_text(), re.S | re.M)
# Blocks that may legitimately return nothing on the two-day test history (no billing period has ended yet).
MAY_BE_EMPTY = ("WHERE complete", "FROM adjustments\nWHERE")  # and no restatement (tests/replay/test_restate_apply.py)


def test_the_page_has_sql_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
@pytest.mark.parametrize("timezone", ["UTC", "America/Los_Angeles"])
def test_sql_block_runs_against_a_snapshot(snapshot_path: Path, sql: str, timezone: str) -> None:
    with duckdb.connect(str(snapshot_path), read_only=True) as con:
        con.execute(f"SET TimeZone = '{timezone}'")
        rows = con.execute(sql).fetchall()
    if not any(marker in sql for marker in MAY_BE_EMPTY):
        assert rows, sql


def test_views_are_independent_of_the_session_timezone(snapshot_path: Path) -> None:
    views = ("daily_peaks", "hourly_heatmap", "hourly_heatmap_utc", "event_counts_daily", "top_accounts_by_overage")
    answers = []
    for timezone in ("UTC", "Asia/Kolkata"):
        with duckdb.connect(str(snapshot_path), read_only=True) as con:
            con.execute(f"SET TimeZone = '{timezone}'")
            answers.append({v: sorted(map(repr, con.execute(f"SELECT {_columns(con, v)} FROM {v}").fetchall()))
                            for v in views})  # fmt: skip
    assert answers[0] == answers[1]
    assert answers[0]["daily_peaks"] and answers[0]["hourly_heatmap"]


def _columns(con: duckdb.DuckDBPyConnection, view: str) -> str:
    """The view's columns, instants as epoch ms (their Python values carry the session's zone)."""
    columns = con.execute(f"DESCRIBE {view}").fetchall()
    return ", ".join(f"epoch_ms({name})" if kind == "TIMESTAMP WITH TIME ZONE" else name for name, kind, *_ in columns)
