"""Every table, view and column of a snapshot carries a description (`COMMENT ON`), and the snapshot file is in the
storage format that older DuckDB releases open."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from processor.snapshots.snapshot import STORAGE_VERSION, describe
from processor.snapshots.tables import TABLE_COLUMN_COMMENTS, TABLE_COMMENTS
from processor.snapshots.views import VIEW_COLUMN_COMMENTS, VIEW_COMMENTS

RELATIONS = """
    SELECT table_name AS name, 'table' AS kind, comment FROM duckdb_tables() WHERE NOT internal AND NOT temporary
    UNION ALL
    SELECT view_name, 'view', comment FROM duckdb_views() WHERE NOT internal AND NOT temporary
"""


@pytest.fixture
def con(snapshot_path: Path) -> duckdb.DuckDBPyConnection:
    with duckdb.connect(str(snapshot_path), read_only=True) as connection:
        yield connection


def test_every_table_and_view_has_a_description(con: duckdb.DuckDBPyConnection) -> None:
    relations = con.execute(RELATIONS).fetchall()
    names = {name for name, _, _ in relations}
    assert {"events", "billing_periods", "billing_days", "snapshot_info", "top_accounts_by_overage"} <= names
    missing = [f"{kind} {name}" for name, kind, comment in relations if not (comment or "").strip()]
    assert not missing, f"without COMMENT ON: {missing}"


def test_every_column_has_a_description(con: duckdb.DuckDBPyConnection) -> None:
    columns = con.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal AND database_name <> 'temp'"
    ).fetchall()
    assert len(columns) > 200
    missing = [f"{table}.{column}" for table, column, comment in columns if not (comment or "").strip()]
    assert not missing, f"columns without COMMENT ON: {missing}"


def test_descriptions_are_short_sentences_of_the_right_objects(con: duckdb.DuckDBPyConnection) -> None:
    comments = dict(
        con.execute(
            "SELECT table_name || '.' || column_name, comment FROM duckdb_columns() WHERE NOT internal"
        ).fetchall()
    )
    comments.update({name: comment for name, _, comment in con.execute(RELATIONS).fetchall()})
    assert all(text.endswith(".") and len(text) <= 200 for text in comments.values())
    assert "peak_at" in comments["billing_periods.peak_users"]
    assert comments["peak_windows.kind"] != comments["alerts.kind"]  # a per-table meaning wins over the shared one
    assert comments["horizons.data_through"] != comments["billing_periods.data_through"]
    assert comments["billing_periods.licenses"] != comments["usage_changes.licenses"]


def test_described_objects_exist(con: duckdb.DuckDBPyConnection) -> None:
    """No description names a table or view that a snapshot does not have (a renamed one would lose its comment)."""
    names = {name for name, _, _ in con.execute(RELATIONS).fetchall()}
    for described in (TABLE_COMMENTS, TABLE_COLUMN_COMMENTS, VIEW_COMMENTS, VIEW_COLUMN_COMMENTS):
        assert set(described) <= names
    for columns_of in (TABLE_COLUMN_COMMENTS, VIEW_COLUMN_COMMENTS):
        for relation, columns in columns_of.items():
            have = {row[0] for row in con.execute(f"DESCRIBE {relation}").fetchall()}
            assert set(columns) <= have, relation


def test_the_file_is_written_in_the_old_storage_format(con: duckdb.DuckDBPyConnection, snapshot_path: Path) -> None:
    header = snapshot_path.read_bytes()[:20]
    assert header[8:12] == b"DUCK"
    assert int.from_bytes(header[12:20], "little") == 64  # the storage version number DuckDB 1.1 reads
    tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    assert tags[0][0].get("storage_version", "").startswith("v1.")
    assert STORAGE_VERSION == "v1.1.0"


def test_describe_skips_objects_without_a_description(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "x.duckdb")) as own:
        own.execute("CREATE TABLE billing_periods (account_id VARCHAR, not_described INTEGER)")
        own.execute("CREATE TABLE unknown_table (account_id VARCHAR)")
        describe(own)
        rows = own.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal ORDER BY ALL"
        ).fetchall()
        tables = dict(own.execute("SELECT table_name, comment FROM duckdb_tables() ORDER BY ALL").fetchall())
    assert rows == [
        ("billing_periods", "account_id", "The contact-center account."),
        ("billing_periods", "not_described", None),
        ("unknown_table", "account_id", "The contact-center account."),
    ]
    assert tables["billing_periods"] and tables["unknown_table"] is None
