"""A snapshot written by the project opens in the oldest DuckDB release that analysts may have (docs/analysts.md).

The old release lives in its own virtual environment, `.cache/duckdb-<version>/` at the repository root, made once with
`python -m venv` and pip (PyPI) and reused by later runs. When it cannot be made the test fails with pip's message:
it is never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from processor.snapshots.snapshot import OLDEST_DUCKDB, build_snapshot, pid_alive

ROOT = Path(__file__).resolve().parents[3]
DOC_SQL = re.findall(r"^```sql\n(.*?)^```", (ROOT / "docs" / "analysts.md").read_text(), re.S | re.M)
OLD_ENV = ROOT / ".cache" / f"duckdb-{OLDEST_DUCKDB}"
# pytz: DuckDB's Python package before 1.2 needs it to return TIMESTAMPTZ values.
OLD_PACKAGES = (f"duckdb=={OLDEST_DUCKDB}", "pytz")
READY = ".ready"

# Run by the old interpreter (and by ours, to compare): opens the snapshot read-only and prints the answers as JSON.
READER = r"""
import json, sys
import duckdb

con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
queries = json.loads(sys.argv[2])
answers = {"version": duckdb.__version__}
for name, sql in queries.items():
    answers[name] = [[str(value) for value in row] for row in con.execute(sql).fetchall()]
print(json.dumps(answers))
"""
# Runs every SQL example of docs/analysts.md: the row count of each, or the first line of its error.
DOCS_READER = r"""
import json, sys
import duckdb

con = duckdb.connect(sys.argv[1], read_only=True)
answers = []
for sql in json.loads(sys.argv[2]):
    try:
        answers.append(len(con.execute(sql).fetchall()))
    except duckdb.Error as exc:
        answers.append(str(exc).splitlines()[0])
print(json.dumps(answers))
"""
QUERIES = {
    "billing_periods": "SELECT * FROM billing_periods ORDER BY account_id, period_from",
    "billing_days": "SELECT * FROM billing_days ORDER BY account_id, date",
    "usage_changes": "SELECT count(*), min(changed_at), max(changed_at), sum(usage) FROM usage_changes",
    "peak_users": "SELECT account_id, u.user_id, u.devices, u.portal, u.api "
    "FROM billing_periods, unnest(peak_users) AS t(u) ORDER BY account_id, period_from, u.user_id",
    "top_accounts_by_overage": "SELECT * FROM top_accounts_by_overage",
    "current_usage": "SELECT * FROM current_usage",
    "snapshot_offsets": "SELECT * FROM snapshot_offsets",
    "comments": "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal ORDER BY table_name",
    "column_comments": "SELECT count(*), count(comment) FROM duckdb_columns() WHERE NOT internal",
}


def _run(args: list[str], what: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot {what}: {exc}")
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        pytest.fail(f"cannot {what} (exit {done.returncode}):\n{tail}")
    return done


def _version_of(python: Path) -> str | None:
    """The DuckDB version importable by `python`, or None."""
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import duckdb, pytz; print(duckdb.__version__)"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _ready(env: Path) -> bool:
    return (env / READY).exists() and _version_of(env / "bin" / "python") == OLDEST_DUCKDB


def _remove_dead_builds() -> None:
    """Half-made environments of runs that were killed (`<name>.tmp-<pid>` of a pid that is gone)."""
    for path in OLD_ENV.parent.glob(f"{OLD_ENV.name}.tmp-*"):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def old_python() -> Path:
    """The interpreter of the old DuckDB's environment, made when missing: under a temporary name, then renamed into
    place, so a half-made environment is never used and concurrent runs do not disturb each other."""
    if _ready(OLD_ENV):
        return OLD_ENV / "bin" / "python"
    OLD_ENV.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds()
    building = OLD_ENV.with_name(f"{OLD_ENV.name}.tmp-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(building)], f"create a virtual environment in {building}")
    pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, *OLD_PACKAGES], f"install {' '.join(OLD_PACKAGES)} from PyPI into {building}")
    (building / READY).write_text(OLDEST_DUCKDB + "\n")
    if not _ready(building):
        pytest.fail(f"{building}: duckdb {OLDEST_DUCKDB} was installed but does not import")
    if OLD_ENV.exists() and not _ready(OLD_ENV):
        shutil.rmtree(OLD_ENV, ignore_errors=True)
    try:
        building.rename(OLD_ENV)
    except OSError:  # another run put its environment in place meanwhile: use that one
        shutil.rmtree(building, ignore_errors=True)
    if not _ready(OLD_ENV):
        pytest.fail(f"{OLD_ENV}: the environment of duckdb {OLDEST_DUCKDB} is not usable after it was made")
    return OLD_ENV / "bin" / "python"


def read_with(python: Path, snapshot: Path, reader: str = READER, queries: object = QUERIES) -> Any:
    """The answers of `reader` run by `python` on `snapshot`."""
    done = _run([str(python), "-c", reader, str(snapshot), json.dumps(queries)], f"read {snapshot} with {python}")
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_snapshot_opens_in_the_oldest_supported_duckdb(snapshot_path: Path) -> None:
    old = read_with(old_python(), snapshot_path)
    ours = read_with(Path(sys.executable), snapshot_path)
    assert old.pop("version") == OLDEST_DUCKDB
    ours.pop("version")
    assert old == ours
    assert old["billing_periods"] and old["peak_users"] and old["top_accounts_by_overage"]
    assert int(old["usage_changes"][0][0]) > 0
    columns, described = old["column_comments"][0]
    assert columns == described, "every column carries its description in the old DuckDB too"


@pytest.mark.slow
def test_a_replaced_snapshot_still_opens_in_the_old_duckdb(sink_dir: Path, tmp_path: Path) -> None:
    """The format holds for a snapshot that replaced an older one (`--keep`): both files open."""
    out = tmp_path / "usage.duckdb"
    build_snapshot(sink_dir, out, keep=2)
    build_snapshot(sink_dir, out, keep=2)
    files = [out, *tmp_path.glob("usage.*.duckdb")]
    assert len(files) == 2
    python = old_python()
    for path in files:
        assert read_with(python, path)["billing_periods"]


@pytest.mark.slow
def test_the_docs_sql_runs_in_the_oldest_supported_duckdb(snapshot_path: Path) -> None:
    """docs/analysts.md promises DuckDB 1.1: every SQL example runs there and returns as many rows as in ours."""
    assert DOC_SQL
    old = read_with(old_python(), snapshot_path, DOCS_READER, DOC_SQL)
    ours = read_with(Path(sys.executable), snapshot_path, DOCS_READER, DOC_SQL)
    failing = {sql.strip().splitlines()[0]: answer for sql, answer in zip(DOC_SQL, old, strict=True)
               if isinstance(answer, str)}  # fmt: skip
    assert not failing, f"SQL examples that DuckDB {OLDEST_DUCKDB} cannot run: {failing}"
    assert old == ours
