"""The batch engine applies the input limits of `schemas.events.decode` (size, then UTF-8, then nesting depth) to the
lines of a `.jsonl` file, with the same verdict for every line (`too_large` and all the others)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from processor.batch.engine import BatchEngine
from processor.eventfile import line_content, read_events
from schemas.events import MAX_JSON_DEPTH, Rejection, decode

GOOD = {"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u",
        "occurred_at": "2026-11-02T08:00:00Z"}  # fmt: skip
LIMIT = 2000


def _lines() -> list[bytes]:
    deep = MAX_JSON_DEPTH
    lines = [
        json.dumps(GOOD).encode(),
        b"[" * (deep + 1) + b"]" * (deep + 1),
        b"[" * deep + b"]" * deep,
        b"[" * 10_000 + b"]" * 10_000,
        b"{" * 10_000,
        json.dumps({**GOOD, "x": "[" * 100}).encode(),
        b'{"a":"\\"' + b"[" * 100 + b'"}',
        b'{"a":"\\\\"' + b"[" * 100 + b'"}',
        b'"unterminated ' + b"[" * 100,
        b"x" * LIMIT,
        b"x" * (LIMIT + 1),
        b"y" * (LIMIT - 1) + b"\r",
        b"\xff" * (LIMIT + 1),
        b"\xff" * 10 + b"[" * 100,
        json.dumps({**GOOD, "pad": "p" * (LIMIT - 150)}).encode(),
        json.dumps({**GOOD, "deep": json.loads("[" * (deep - 1) + "]" * (deep - 1))}).encode(),
        json.dumps({**GOOD, "deep": json.loads("[" * deep + "]" * deep)}).encode(),
        json.dumps({**GOOD, "account_id": "a" * 129}).encode(),
        b"]]]]" + b"[" * (deep + 2),
    ]
    rng = random.Random(7)
    alphabet = b'[[[[[[{{{{{{]]]}}}"\\ax'
    lines += [bytes(rng.choice(alphabet) for _ in range(rng.randint(60, 400))) for _ in range(400)]
    return lines


def test_both_engines_give_every_line_the_same_verdict(tmp_path: Path) -> None:
    lines = _lines()
    path = tmp_path / "limits.jsonl"
    path.write_bytes(b"".join(line + (b"\r\n" if n % 3 == 0 else b"\n") for n, line in enumerate(lines)))
    engine = BatchEngine(max_record_bytes=LIMIT)
    engine.load(path)
    batch = dict(engine.rejected())
    with path.open("rb") as handle:
        stream = {n: decode(line_content(raw), LIMIT) for n, raw in enumerate(handle)}
    verdicts = {n: d.reason if isinstance(d, Rejection) else None for n, d in stream.items()}
    differ = {n: (verdicts[n], batch.get(n), lines[n][:60]) for n in verdicts if verdicts[n] != batch.get(n)}
    assert not differ
    assert verdicts[1] == verdicts[3] == verdicts[4] == verdicts[10] == verdicts[12] == "too_large"
    assert verdicts[0] is None and "too_large" not in (verdicts[2], verdicts[9], verdicts[11])
    assert verdicts[15] is None and verdicts[16] == "too_large" and verdicts[17] == "invalid_field:account_id"
    assert sum(v == "too_large" for v in verdicts.values()) > 20  # the random lines reach the limit too


def test_event_files_read_with_the_default_limits(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\r\n" + b"[" * 100 + b"\n")
    verdicts = [getattr(d, "reason", None) for _, d in read_events(path)]
    assert verdicts == [None, "too_large"]
    engine = BatchEngine()
    engine.load(path)
    assert engine.rejected() == [(1, "too_large")]
