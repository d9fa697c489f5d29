"""The sink's data directory: immutable Parquet files plus one manifest that says which of them are committed.

Layout::

    DIR/_sink/manifest.json                          offsets (next offset per topic/partition), watermarks
    DIR/_sink/lock                                   held (flock) by the one running sink
    DIR/<table>/date=YYYY-MM-DD/<topic>-p<P>-<first>-<last>.parquet

A file holds records of one topic partition with offsets `first..last` (inclusive). It is **committed** when
`last < offsets[topic][P]` in the manifest. The sink writes a flush's files (each to a hidden temporary name, then
renamed), and only then replaces the manifest (temporary file, fsync, rename). A reader that reads the manifest once
and then only the committed files sees a consistent cut, whatever the sink does meanwhile: committed files are
never modified, files written later are not committed by the manifest it read, and `compact` only removes committed
files after a merged file with the same rows is in place (a reader that lists both deduplicates by Kafka position
and ids; one that finds a listed file gone starts over).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from processor.snapshots.tables import TABLES, Table

MANIFEST_FORMAT = 1
SINK_DIR = "_sink"
MANIFEST = "manifest.json"
LOCK = "lock"
FILE_RE = re.compile(r"(?P<topic>[A-Za-z0-9_-]+)-p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet")


class StoreError(Exception):
    """The data directory is missing, locked by another sink, or belongs to another topic prefix."""


@dataclass
class Manifest:
    """What is committed: next offsets per topic key and partition, event-time watermarks per events partition."""

    prefix: str
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)
    flushes: int = 0
    updated_at: str | None = None
    events_topic: str | None = None  # the events topic read, when not prefix + "events" (a rebuilt version's sink)

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The committed next offset of a topic partition (None when nothing was committed)."""
        return self.offsets.get(topic, {}).get(partition)

    def committed(self, name: str) -> bool:
        """True if the data file called `name` is covered by this manifest."""
        match = FILE_RE.fullmatch(name)
        if not match:
            return False
        upto = self.next_offset(match["topic"], int(match["partition"]))
        return upto is not None and int(match["last"]) < upto

    @property
    def watermark_ms(self) -> int | None:
        """The event-time watermark of the data: the largest partition watermark."""
        return max(self.watermarks.values(), default=None)

    def to_json(self) -> dict[str, Any]:
        """JSON form (partition keys as strings)."""
        return {
            "format": MANIFEST_FORMAT,
            "prefix": self.prefix,
            "offsets": {t: {str(p): o for p, o in sorted(parts.items())} for t, parts in sorted(self.offsets.items())},
            "watermarks": {str(p): w for p, w in sorted(self.watermarks.items())},
            "flushes": self.flushes,
            "updated_at": self.updated_at,
            **({"events_topic": self.events_topic} if self.events_topic else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Parse `to_json` output."""
        if data.get("format") != MANIFEST_FORMAT:
            raise StoreError(f"unsupported manifest format {data.get('format')!r}")
        return cls(
            prefix=data["prefix"],
            offsets={t: {int(p): int(o) for p, o in parts.items()} for t, parts in data.get("offsets", {}).items()},
            watermarks={int(p): int(w) for p, w in data.get("watermarks", {}).items()},
            flushes=int(data.get("flushes", 0)),
            updated_at=data.get("updated_at"),
            events_topic=data.get("events_topic"),
        )


def manifest_path(data_dir: Path) -> Path:
    """Where the manifest of a data directory lives."""
    return data_dir / SINK_DIR / MANIFEST


def read_manifest(data_dir: Path) -> Manifest | None:
    """The committed manifest, or None if the sink never committed anything here."""
    path = manifest_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return Manifest.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: not a ccmeter sink manifest ({exc})") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` so that readers see the old or the new content, never a part of it."""
    tmp = _tmp_name(target)
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(target)
    _fsync_dir(target.parent)


def write_manifest(data_dir: Path, manifest: Manifest) -> None:
    """Commit `manifest` atomically (after the files it covers are in place)."""
    manifest_path(data_dir).parent.mkdir(parents=True, exist_ok=True)
    manifest.updated_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    write_atomic(manifest_path(data_dir), (json.dumps(manifest.to_json(), indent=1) + "\n").encode())


def file_name(topic: str, partition: int, first: int, last: int) -> str:
    """Name of the file with offsets `first..last` of a topic partition."""
    return f"{topic}-p{partition}-{first}-{last}.parquet"


def write_parquet(path: Path, data: pa.Table) -> None:
    """Write a Parquet file under a hidden temporary name, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with tmp.open("wb") as handle:
        pq.write_table(data, handle, compression="zstd")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def sync_dirs(paths: set[Path]) -> None:
    """fsync directories whose entries changed (renamed files survive a power loss)."""
    for path in sorted(paths):
        _fsync_dir(path)


def data_files(data_dir: Path, table: Table) -> Iterator[Path]:
    """Every data file of a table (committed or not), in a stable order."""
    root = data_dir / table.name
    if not root.is_dir():
        return
    for day in sorted(root.iterdir()):
        if not day.is_dir() or not day.name.startswith("date="):
            continue
        for path in sorted(day.iterdir()):
            if FILE_RE.fullmatch(path.name):
                yield path


def committed_files(data_dir: Path, manifest: Manifest) -> dict[str, list[Path]]:
    """The committed data files of every table under `manifest` (the consistent cut a snapshot reads)."""
    return {table.name: [p for p in data_files(data_dir, table) if manifest.committed(p.name)] for table in TABLES}


@dataclass(frozen=True)
class Compaction:
    """What `compact` did."""

    groups: int = 0
    files_in: int = 0
    files_out: int = 0


def compact(
    data_dir: Path, manifest: Manifest, *, min_files: int = 8, small_bytes: int = 16 * 1024 * 1024
) -> Compaction:
    """Merge the small committed files of each table, date and topic partition into one file (size-tiered).

    Safe beside readers: the merged file is written (temporary name, rename) before the files it replaces are
    removed, and it holds the same rows. A snapshot that lists both keeps one copy of each row (its deduplication);
    one that finds a listed file gone starts over (snapshot.py). A crash between the two steps leaves overlapping
    files, merged again next time. Only the sink calls this, holding the lock.
    """
    import numpy as np

    groups: dict[tuple[str, Path, str, int], list[tuple[int, int, Path]]] = {}
    for table in TABLES:
        for path in data_files(data_dir, table):
            match = FILE_RE.fullmatch(path.name)
            if not match or not manifest.committed(path.name) or path.stat().st_size >= small_bytes:
                continue
            key = (table.name, path.parent, match["topic"], int(match["partition"]))
            groups.setdefault(key, []).append((int(match["first"]), int(match["last"]), path))
    by_name = {table.name: table for table in TABLES}
    done = Compaction()
    for (table_name, folder, topic, partition), parts in sorted(groups.items()):
        if len(parts) < min_files:
            continue
        parts.sort()
        data = pa.concat_tables([pq.read_table(path).cast(by_name[table_name].schema) for _, _, path in parts])
        offsets = data.column("kafka_offset").to_numpy()
        _, first_index = np.unique(offsets, return_index=True)  # rows of overlapping files (interrupted merges)
        data = data.take(pa.array(np.sort(first_index)))
        target = folder / file_name(topic, partition, parts[0][0], max(last for _, last, _ in parts))
        write_parquet(target, data)
        _fsync_dir(folder)
        for _, _, path in parts:
            if path != target:
                path.unlink(missing_ok=True)
        _fsync_dir(folder)
        done = Compaction(done.groups + 1, done.files_in + len(parts), done.files_out + 1)
    return done


@dataclass
class Recovery:
    """What `recover` did: the manifest to resume from, the files it removed, the offsets it had to rewind."""

    manifest: Manifest | None
    removed: list[Path] = field(default_factory=list)
    rewound: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (topic, p) -> (old, new)


def _all_files(data_dir: Path) -> Iterator[tuple[Path, str, int, int, int]]:
    for table in TABLES:
        for path in data_files(data_dir, table):
            match = FILE_RE.fullmatch(path.name)
            if match:
                yield path, match["topic"], int(match["partition"]), int(match["first"]), int(match["last"])


def recover(data_dir: Path, manifest: Manifest | None, on_rewind: Callable[[Recovery], None] | None = None) -> Recovery:
    """Clean up before a sink resumes: remove temporary files and data files the manifest does not commit.

    A manifest written by the sink always ends between files. One whose offset falls inside a file (progress reset
    by hand to an arbitrary offset) is rewound to that file's first offset, repeatedly, until no file straddles it;
    the files at or beyond the new offset are removed and consumed again. `on_rewind(recovery)` runs before any file
    is removed: the sink commits the adjusted `recovery.manifest` there, so that snapshots never list a file about to
    go. Only the sink calls this, holding the lock.
    """
    recovery = Recovery(manifest)
    files = list(_all_files(data_dir))
    if manifest is not None:
        offsets = {(t, p): o for t, parts in manifest.offsets.items() for p, o in parts.items()}
        changed = True
        while changed:
            changed = False
            for _, topic, partition, first, last in files:
                upto = offsets.get((topic, partition))
                if upto is not None and first < upto <= last:
                    offsets[(topic, partition)] = first
                    changed = True
        for key, upto in offsets.items():
            old = manifest.offsets[key[0]][key[1]]
            if upto != old:
                recovery.rewound[key] = (old, upto)
        if recovery.rewound:
            adjusted: dict[str, dict[int, int]] = {}
            for (topic, partition), upto in offsets.items():
                adjusted.setdefault(topic, {})[partition] = upto
            recovery.manifest = Manifest(manifest.prefix, adjusted, dict(manifest.watermarks), manifest.flushes)
            recovery.manifest.events_topic = manifest.events_topic
            if on_rewind is not None:
                on_rewind(recovery)
    kept = recovery.manifest
    for path, *_ in files:
        if not (kept and kept.committed(path.name)):
            path.unlink(missing_ok=True)
            recovery.removed.append(path)
    for table in TABLES:
        root = data_dir / table.name
        if root.is_dir():
            for leftover in root.glob("date=*/.*.tmp-*"):
                leftover.unlink(missing_ok=True)
                recovery.removed.append(leftover)
    sink = data_dir / SINK_DIR
    if sink.is_dir():
        for leftover in sink.glob(f".{MANIFEST}.tmp-*"):
            leftover.unlink(missing_ok=True)
            recovery.removed.append(leftover)
    return recovery


@contextlib.contextmanager
def sink_lock(data_dir: Path) -> Iterator[IO[str]]:
    """Hold the data directory's lock for the life of one sink; StoreError if another sink holds it."""
    sink = data_dir / SINK_DIR
    sink.mkdir(parents=True, exist_ok=True)
    handle = (sink / LOCK).open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{data_dir} is in use by another sink (lock {sink / LOCK})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()
