"""`python -m bench.cli_peak RESULT.json [--memory-limit LIMIT] ARGS...`: run `ccmeter ARGS` in this process and
write its exit status and peak resident memory (`VmHWM` of /proc/self/status, read as it finishes) to RESULT.json.

Why not the rusage of the child (`wait4`): on Linux a child's `ru_maxrss` also counts the memory the parent had when
it forked (the high-water mark of the pre-exec copy), so a big benchmark driver would inflate it. With
`--memory-limit` every DuckDB connection the command opens gets `SET memory_limit = LIMIT` (a diagnostic: ccmeter
sets none, so DuckDB keeps its default of 80% of the machine's memory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import duckdb


def peak_kib() -> int:
    """This process's resident-memory high-water mark in KiB (0 if unknown)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cap_duckdb(limit: str) -> None:
    """Make every later duckdb.connect() set `memory_limit = limit`."""
    connect = duckdb.connect

    def capped(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        con = connect(*args, **kwargs)
        con.execute(f"SET memory_limit = '{limit}'")
        return con

    duckdb.connect = capped  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    """Run the ccmeter CLI with the remaining arguments; record status and peak RSS."""
    result, args = Path(argv[0]), argv[1:]
    if args[:1] == ["--memory-limit"]:
        cap_duckdb(args[1])
        args = args[2:]
    from processor.cli import main as cli

    status: Any = 1
    try:
        status = cli(args)
    except SystemExit as exc:
        status = exc.code
        raise
    finally:
        result.write_text(json.dumps({"status": status if isinstance(status, int) else 1, "vmhwm_kib": peak_kib()}))
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
