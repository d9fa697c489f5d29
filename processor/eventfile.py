"""Read event files (`.jsonl` or `.parquet`) in arrival order, decoded with `schemas/`.

Arrival is the 0-based line number of a `.jsonl` file, or the `arrival` column (else the row order) of a Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from schemas.events import Event, Rejection, decode, decode_mapping

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")


class EventFileError(Exception):
    """The file cannot be read as an event file (missing, wrong suffix, unreadable)."""


def check_event_file(path: str | Path) -> Path:
    """The path, once it is known to be an existing `.jsonl` or `.parquet` file."""
    file = Path(path)
    if file.suffix not in SUPPORTED_SUFFIXES:
        raise EventFileError(f"{file}: expected a .jsonl or .parquet event file")
    if not file.is_file():
        raise EventFileError(f"{file}: no such file")
    return file


def line_content(line: bytes) -> bytes:
    """A line without its line break (b"\\n", b"\\r\\n"): what the size limit of a record counts."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def read_events(path: str | Path) -> Iterator[tuple[int, Event | Rejection]]:
    """Yield `(arrival, event or rejection)` for every record of the file, in arrival order."""
    file = check_event_file(path)
    if file.suffix == ".jsonl":
        with file.open("rb") as handle:
            for number, raw in enumerate(handle):
                yield number, decode(line_content(raw))
        return
    yield from _read_parquet(file)


def _read_parquet(file: Path) -> Iterator[tuple[int, Event | Rejection]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(file)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise EventFileError(f"{file}: not a readable Parquet file ({exc})") from exc
    names = table.schema_arrow.names
    rows: list[tuple[int, Event | Rejection]] = []
    position = 0
    for batch in table.iter_batches(batch_size=65_536):
        for row in batch.to_pylist():
            arrival = row.pop("arrival", None) if "arrival" in names else None
            rows.append((position if arrival is None else int(arrival), decode_mapping(row)))
            position += 1
        if "arrival" not in names:
            yield from rows
            rows.clear()
    rows.sort(key=lambda item: item[0])
    yield from rows
