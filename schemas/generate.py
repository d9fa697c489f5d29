"""Generate the JSON Schema files in `schemas/json/` from the pydantic models.

Producers in other languages validate against these files; `tests/schemas/test_json_schema.py` fails when they are
stale. Regenerate with `make schemas` (or `python -m schemas.generate`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.events import EVENT_ADAPTER, MAX_YEAR, MIN_YEAR, TIMESTAMP_PATTERN, Rejection
from schemas.outputs import AlertRecord, DeadLetterRecord, PeakWindowRecord, Report, UsageChangeRecord

JSON_DIR = Path(__file__).parent / "json"
SCHEMA_ID = "https://github.com/ccmeter/ccmeter/schemas/json/"


def _event_schema() -> dict[str, Any]:
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    schema["title"] = "ccmeter session event"
    schema["description"] = (
        "One session event as published by upstream contact-center services (one JSON object per Kafka record, "
        "key = account_id). Unknown extra fields are ignored. occurred_at must be RFC 3339 with an offset."
    )
    # The timestamp is parsed by a custom validator: say what it accepts.
    for definition in schema.get("$defs", {}).values():
        props = definition.get("properties", {})
        if "occurred_at" in props:
            props["occurred_at"] = {
                "type": "string",
                "format": "date-time",
                "pattern": f"^{TIMESTAMP_PATTERN}$",
                "description": (
                    "RFC 3339 timestamp: YYYY-MM-DDTHH:MM:SS, optional '.' and 1-9 digits, then Z or +HH:MM/-HH:MM "
                    "(T and Z in either case); the day must exist in its month; in UTC it must lie in the years "
                    f"{MIN_YEAR}..{MAX_YEAR}. Kept in UTC, truncated to milliseconds. Otherwise: invalid_timestamp."
                ),
                "title": "Occurred At",
            }
    return schema


def build_schemas() -> dict[str, dict[str, Any]]:
    """All schema documents by file name."""
    documents: dict[str, dict[str, Any]] = {"event.schema.json": _event_schema()}
    for name, model in (
        ("usage-change.schema.json", UsageChangeRecord),
        ("peak-window.schema.json", PeakWindowRecord),
        ("alert.schema.json", AlertRecord),
        ("dead-letter.schema.json", DeadLetterRecord),
        ("report.schema.json", Report),
        ("rejection.schema.json", Rejection),
    ):
        documents[name] = TypeAdapter(model).json_schema(mode="serialization", by_alias=True)
    for name, document in documents.items():
        document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        document["$id"] = SCHEMA_ID + name
    return documents


def render(document: dict[str, Any]) -> str:
    """Stable text of one schema document."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write every schema file; print what changed."""
    JSON_DIR.mkdir(exist_ok=True)
    for name, document in build_schemas().items():
        path = JSON_DIR / name
        text = render(document)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
