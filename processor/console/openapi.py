"""The OpenAPI 3.1 document of the console's HTTP API (served at /openapi.json, checked in as docs/openapi.json).

`python -m processor.console.openapi > docs/openapi.json` writes it again after a change; a test checks both agree.
The report's schema is generated from `schemas.outputs.Report`, the model `ccmeter report --format json` prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from schemas.outputs import Report

REF = "#/components/schemas/{model}"
INSTANT = {"type": "string", "format": "date-time", "description": "RFC 3339 UTC with milliseconds"}
NULL_INSTANT = {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339 UTC, or null"}
LOCAL_DATE = {"type": "string", "format": "date"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _object(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _nullable_int(description: str) -> dict[str, Any]:
    return {"type": ["integer", "null"], "minimum": 0, "description": description + " (null when served live)"}


def _int(description: str = "", minimum: int | None = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if description:
        schema["description"] = description
    return schema


PLAN = _object(
    "The plan in effect at the last known instant (defaults before the account's first plan; `since` null then).",
    {
        "since": NULL_INSTANT,
        "licenses": _int(),
        "overage_allowance": _int(),
        "billing_anchor_day": {"type": "integer", "minimum": 1, "maximum": 28},
        "timezone": {"type": "string", "description": "IANA timezone of the account"},
        "grace_minutes": _int(),
        "grace_mode": {"type": "string", "enum": ["contiguous", "cumulative"]},
    },
)
USAGE = _object(
    "Usage now: the fields of the worker's live query plus `today`, `data_through_local`, `plan` and "
    "`billable_rule`. From a snapshot: as of the account's data_through (its last known instant; `as_of` = "
    "`data_through`). Served live by a worker: usage, headroom and today's peak are provisional, as of `as_of` "
    "(events still inside the lateness window count), and `data_through` says what is final.",
    {
        "account_id": {"type": "string"},
        "usage": _int("distinct users counted at the last known instant"),
        "licenses": _int(),
        "overage_allowance": _int(),
        "headroom": _int("licenses - usage (negative when over licenses)", minimum=None),
        "today": {
            "type": ["string", "null"],
            "format": "date",
            "description": "account-local date of data_through (live: of as_of)",
        },
        "today_peak": _int("peak usage of that local day up to data_through (live: up to as_of)"),
        "today_peak_at": NULL_INSTANT,
        "as_of": NULL_INSTANT,
        "data_through": NULL_INSTANT,
        "data_through_local": {"type": ["string", "null"], "description": "data_through in the account's timezone"},
        "plan": _ref("Plan"),
        "billable_rule": {"type": "string", "description": "the plan's billable-overage (grace) rule in one sentence"},
    },
)
ACCOUNT_ROW = _object(
    "One account in the overview: usage now and its current billing period so far.",
    {
        "account_id": {"type": "string"},
        "usage": _int(),
        "licenses": _int(),
        "overage_allowance": _int(),
        "headroom": _int(minimum=None),
        "data_through": NULL_INSTANT,
        "timezone": {"type": "string"},
        "period_from": {"type": ["string", "null"], "format": "date"},
        "period_to": {"type": ["string", "null"], "format": "date"},
        "peak_usage": _nullable_int("peak of the current period so far"),
        "peak_at": NULL_INSTANT,
        "billable_overage": _nullable_int("billable overage of the current period so far (grace-aware)"),
        "over_allowance": _nullable_int("the part of the billable overage above the allowance"),
        "complete": {"type": "boolean", "description": "the current period is complete (never, while current)"},
    },
)
SNAPSHOT_SOURCE = _object(
    "The console reads a snapshot (`ccmeter console --snapshot FILE`).",
    {
        "kind": {"type": "string", "enum": ["snapshot"]},
        "name": {"type": "string", "description": "file name of the snapshot"},
        "snapshot_id": {"type": ["string", "null"]},
        "created_at": NULL_INSTANT,
        "watermark": NULL_INSTANT,
    },
)
LIVE_SOURCE = _object(
    "The console is served live by the workers (`ccmeter worker`), from the state they hold.",
    {
        "kind": {"type": "string", "enum": ["live"]},
        "name": {"type": "string", "description": "the workers' app id"},
        "partitions": {"type": "array", "items": _int(), "description": "events-topic partitions covered"},
        "workers": _int("workers that answered"),
    },
)
SOURCE = {"description": "What the console reads.", "oneOf": [_ref("SnapshotSource"), _ref("LiveSource")]}
CHANGE = _object(
    "One change of the account's usage.",
    {"at": INSTANT, "usage": _int(), "licenses": _int(), "change_id": {"type": "string"}},
)
CHANGES = _object(
    "The usage step function on [from, known_until): the level at `from` and every change after it; "
    "known_until = min(to, data_through), nothing after data_through is known.",
    {
        "account_id": {"type": "string"},
        "from": INSTANT,
        "to": INSTANT,
        "known_until": INSTANT,
        "data_through": NULL_INSTANT,
        "start_usage": _int(),
        "start_licenses": _int(),
        "changes": {"type": "array", "items": _ref("Change")},
    },
)
MINUTES = _object(
    "One account-local day at minute resolution: element k of each list is minute k from `start` (the highest usage "
    "in it, the licenses and allowance in effect); only minutes before data_through are listed.",
    {
        "account_id": {"type": "string"},
        "date": LOCAL_DATE,
        "timezone": {"type": "string"},
        "start": INSTANT,
        "end": INSTANT,
        "minutes": _int("minutes in the day (1380, 1440 or 1500 by DST)"),
        "data_through": NULL_INSTANT,
        "max_usage": {"type": "array", "items": _int()},
        "licenses": {"type": "array", "items": _int()},
        "overage_allowance": {"type": "array", "items": _int()},
    },
)
USERS = _object(
    "The users counted at an instant, each with the presences that made it count.",
    {
        "account_id": {"type": "string"},
        "at": INSTANT,
        "usage": _int(),
        "users": {"type": "array", "items": _ref("PeakUser")},
    },
)
DEAD_LETTER = _object(
    "A dead letter, as `ccmeter deadletters --format json` shows it.",
    {
        "reason": {"type": "string"},
        "detail": {"type": "string"},
        "source_partition": {"type": ["integer", "null"]},
        "source_offset": {"type": ["integer", "null"]},
        "kafka_ts": NULL_INSTANT,
        "original": {"type": "string", "description": "the original record (control characters escaped)"},
    },
)
DEAD_LETTER["properties"].update(
    {
        "original_size": {"type": ["integer", "null"], "description": "bytes of the original record"},
        "original_sha256": {"type": ["string", "null"], "description": "SHA-256 of the original bytes (hex)"},
    }
)
DEAD_LETTERS = _object(
    "The account's last dead letters (oldest first) and how many it has.",
    {
        "account_id": {"type": "string"},
        "total": _int(),
        "letters": {"type": "array", "items": _ref("DeadLetter")},
    },
)
ERROR = {
    "type": "object",
    "description": "Why the request was refused, in one line (`error`, and for some live answers `reason`).",
    "properties": {
        "error": {"type": "string"},
        "reason": {"type": "string", "description": "why (401, 403, 503)"},
        "account_id": {"type": "string"},
        "partitions": {"type": "array", "items": _int(), "description": "partitions checked (forwarded 404)"},
    },
    "required": ["error"],
    "additionalProperties": False,
}

ACCOUNT_PARAM = {
    "name": "account_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the account's id",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "bad parameter, or nothing known of the requested range",
        401: "live: no valid bearer token",
        403: "live: the token may not read this account",
        404: "unknown account",
        501: "live: not served by the workers (it needs the account's history): use the snapshot console",
        503: "live: no trustworthy answer now (a rebalance, a worker that did not answer); retry after Retry-After",
    }
    return {str(status): _json(_ref("Error"), words[status]) for status in statuses}


LIVE = (401, 403, 503)  # the answers of an endpoint served live
NOT_LIVE = (401, 403, 501)  # ... and of one that the workers do not serve


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _get(summary: str, ok: dict[str, Any], *errors: int, parameters: tuple[dict[str, Any], ...] = ()) -> dict:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if parameters:
        operation["parameters"] = list(parameters)
    return {"get": operation}


def _report_schemas() -> dict[str, Any]:
    schema = Report.model_json_schema(by_alias=True, ref_template=REF, mode="serialization")
    defs = schema.pop("$defs", {})
    days = schema["properties"].pop("days")
    schema["properties"]["restatement"] = {
        "type": "string",
        "enum": ["live", "restated"],
        "description": "`restated` when a restatement was applied to this period (SPEC 4); absent otherwise",
    }
    schema["properties"]["days"] = days
    schema["additionalProperties"] = False
    return {"Report": schema, **defs}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the console API."""
    report_ok = {
        "description": "the report: JSON exactly as `ccmeter report --snapshot ... --format json`, or its CSV",
        "content": {
            "application/json": {"schema": _ref("Report")},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
    paths = {
        "/openapi.json": _get("This document", _json({"type": "object"}, "the OpenAPI document")),
        "/api/accounts": _get(
            "Every account: usage now, licenses, headroom, the current period's peak and billable overage so far",
            _json(
                _object(
                    "The accounts overview.",
                    {"source": _ref("Source"), "accounts": {"type": "array", "items": _ref("AccountRow")}},
                ),
                "every account, sorted by id (live: the accounts the token may read, from every worker)",
            ),
            401,
            503,
        ),
        "/api/accounts/{account_id}/usage": _get(
            "One account's usage now (as of its data_through) and today's peak",
            _json(_ref("Usage"), "usage now"),
            404,
            *LIVE,
            parameters=(ACCOUNT_PARAM,),
        ),
        "/api/accounts/{account_id}/report": _get(
            "The licenses usage report (SPEC section 4) of a billing period or local date range",
            report_ok,
            400,
            404,
            *NOT_LIVE,
            parameters=(
                ACCOUNT_PARAM,
                _query(
                    "period",
                    "current, previous or YYYY-MM (default current when neither period nor from/to is given)",
                    {"type": "string"},
                ),
                _query("from", "first local date (with `to`, instead of `period`)", LOCAL_DATE),
                _query("to", "last local date, inclusive", LOCAL_DATE),
                _query("format", "json (default) or csv", {"type": "string", "enum": ["json", "csv"]}),
            ),
        ),
        "/api/accounts/{account_id}/changes": _get(
            "Usage change points in a range (for charts), cut at data_through",
            _json(_ref("Changes"), "the step function in the range"),
            400,
            404,
            *NOT_LIVE,
            parameters=(
                ACCOUNT_PARAM,
                _query("from", "first instant (RFC 3339)", INSTANT, required=True),
                _query("to", "end instant, exclusive (RFC 3339)", INSTANT, required=True),
            ),
        ),
        "/api/accounts/{account_id}/days/{date}/minutes": _get(
            "One account-local day at minute resolution (the highest usage of each minute)",
            _json(_ref("DayMinutes"), "the day's minutes up to data_through"),
            400,
            404,
            *NOT_LIVE,
            parameters=(
                ACCOUNT_PARAM,
                {"name": "date", "in": "path", "required": True, "schema": LOCAL_DATE, "description": "local date"},
            ),
        ),
        "/api/accounts/{account_id}/users": _get(
            "The users counted at an instant (before data_through)",
            _json(_ref("UsersAt"), "the users counted then"),
            400,
            404,
            *NOT_LIVE,
            parameters=(ACCOUNT_PARAM, _query("at", "the instant (RFC 3339)", INSTANT, required=True)),
        ),
        "/api/accounts/{account_id}/dead-letters": _get(
            "The account's last dead letters",
            _json(_ref("DeadLetters"), "the last `limit` dead letters, oldest first"),
            400,
            404,
            *NOT_LIVE,
            parameters=(
                ACCOUNT_PARAM,
                _query("limit", "how many (default 20)", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ),
        ),
    }
    schemas = {
        "Error": ERROR,
        "Source": SOURCE,
        "SnapshotSource": SNAPSHOT_SOURCE,
        "LiveSource": LIVE_SOURCE,
        "AccountRow": ACCOUNT_ROW,
        "Plan": PLAN,
        "Usage": USAGE,
        "Change": CHANGE,
        "Changes": CHANGES,
        "DayMinutes": MINUTES,
        "UsersAt": USERS,
        "DeadLetter": DEAD_LETTER,
        "DeadLetters": DEAD_LETTERS,
        **_report_schemas(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ccmeter console API",
            "version": "1",
            "description": "Read-only licenses usage of contact-center accounts (SPEC sections 4 and 5). Every "
            "number is in event time and covers each account up to its data_through: nothing after it is known. "
            "Served from a snapshot by `ccmeter console --snapshot FILE` (loopback, no token), or live by the workers "
            "(`ccmeter worker`, a bearer token of docs/security.md on every /api request): live, the accounts "
            "overview and usage are answered from the workers' state (the period's peak and overage are null), and "
            "the endpoints that need an account's history answer 501.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `ccmeter tokens new` (live workers only; no token for a snapshot)",
                }
            },
        },
        "security": [{"bearer": []}, {}],
    }


def dumps(document: dict[str, Any]) -> str:
    """JSON text as checked in (`docs/openapi.json`): indented, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(openapi_document()))
