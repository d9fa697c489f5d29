"""Where the console's data comes from: `ConsoleSource` is what the API handlers need, `SnapshotSource` serves it
from a DuckDB snapshot (read-only; a worker serves the API from its live state: processor/console/live.py)."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from processor.snapshots.history import AccountHistory, load_histories, snapshot_accounts
from schemas.events import format_ms
from schemas.outputs import Report

# Tables the console reads that a snapshot of an older ccmeter may lack.
NEEDED_TABLES = ("horizons", "partition_horizons", "presence_intervals", "dead_letters")


class SourceError(Exception):
    """The source cannot be opened or read: one line for the user."""


class ConsoleSource(Protocol):
    """What the console API reads: accounts, their histories and their dead letters."""

    def describe(self) -> dict[str, Any]:
        """What the data is (kind, name, when it was taken), for the page header."""
        ...

    def accounts(self) -> list[str]:
        """Every account known, sorted."""
        ...

    def histories(self) -> dict[str, AccountHistory]:
        """The history of every account (`accounts()`)."""
        ...

    def history(self, account_id: str) -> AccountHistory | None:
        """One account's history; None for an unknown account."""
        ...

    def report(self, history: AccountHistory, start: date, end: date) -> tuple[Report, str | None]:
        """The report of the local dates start..end (inclusive) and its restatement status (None: live)."""
        ...

    def dead_letters(self, account_id: str, limit: int) -> tuple[int, list[dict[str, object]]] | None:
        """(how many, the last `limit` of them oldest first) of the account's dead letters; None when no event
        record was keyed by the account."""
        ...


class SnapshotSource:
    """A snapshot file, opened read-only once; it never changes, so what is read is kept (one lock for DuckDB)."""

    def __init__(self, path: str | Path) -> None:
        from processor.snapshots.snapshot import SnapshotError, open_snapshot

        self.path = Path(path)
        try:
            self._con, self._watermark_ms = open_snapshot(self.path)
        except SnapshotError as exc:
            raise SourceError(str(exc)) from None
        tables = {row[0] for row in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        missing = [name for name in NEEDED_TABLES if name not in tables]
        if missing:
            self._con.close()
            raise SourceError(
                f"{self.path}: snapshot of an older ccmeter (no {missing[0]} table); run `ccmeter snapshot` again"
            )
        self._lock = threading.Lock()
        self._accounts = snapshot_accounts(self._con)
        self._histories: dict[str, AccountHistory] | None = None
        self._restated: dict[tuple[str, str, str], Report] | None = None
        rows = self._con.execute("SELECT snapshot_id, epoch_ms(created_at) FROM snapshot_info").fetchall()
        self._info = rows[0] if rows else (None, None)
        keyed = self._con.execute("SELECT DISTINCT kafka_key FROM events WHERE kafka_key IS NOT NULL").fetchall()
        self._letter_accounts = set(self._accounts) | {row[0] for row in keyed}

    def close(self) -> None:
        """Close the snapshot."""
        with self._lock:
            self._con.close()

    def describe(self) -> dict[str, Any]:
        """The snapshot's file name, id, when it was written and its event-time watermark."""
        snapshot_id, created_ms = self._info
        return {
            "kind": "snapshot",
            "name": self.path.name,
            "snapshot_id": snapshot_id,
            "created_at": None if created_ms is None else format_ms(created_ms),
            "watermark": None if self._watermark_ms is None else format_ms(self._watermark_ms),
        }

    def accounts(self) -> list[str]:
        """Every account the snapshot knows (as `ccmeter report --snapshot` does)."""
        return list(self._accounts)

    def histories(self) -> dict[str, AccountHistory]:
        """Every account's history, read once."""
        with self._lock:
            if self._histories is None:
                loaded = load_histories(self._con)
                self._histories = {
                    account: loaded.get(account) or AccountHistory(account) for account in self._accounts
                }
            return self._histories

    def history(self, account_id: str) -> AccountHistory | None:
        """One account's history (None when the snapshot does not know it)."""
        return self.histories().get(account_id)

    def report(self, history: AccountHistory, start: date, end: date) -> tuple[Report, str | None]:
        """The period's restated report when a restatement was applied to it, else the live one (as
        `ccmeter report --snapshot`)."""
        from processor.reports.render import RESTATEMENT_RESTATED
        from processor.snapshots.restatements import restated_reports

        with self._lock:
            if self._restated is None:
                self._restated = restated_reports(self._con)
        restated = self._restated.get((history.account_id, str(start), str(end)))
        if restated is not None:
            return restated, RESTATEMENT_RESTATED
        return history.report(start, end), None  # as the CLI: a live report's JSON has only the report's keys

    def dead_letters(self, account_id: str, limit: int) -> tuple[int, list[dict[str, object]]] | None:
        """The account's last `limit` dead letters, as `ccmeter deadletters` shows them (source order)."""
        from processor.cli.snapshots import dead_letter_rows

        if account_id not in self._letter_accounts:
            return None
        with self._lock:
            total = self._con.execute(
                "SELECT count(*) FROM dead_letters_by_account WHERE account_id = ?", [account_id]
            ).fetchone()[0]
            rows = dead_letter_rows(self._con, account_id, None)
        return total, rows[max(0, len(rows) - limit) :]
