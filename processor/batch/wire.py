"""Wire validation in DuckDB SQL: the same verdicts and reasons as `schemas.events.decode`, set-based.

Two readers feed one validation stage (`validate_sql`):

* `.jsonl` (`jsonl_fields_sql`): raw line (BLOB) -> UTF-8 check -> JSON syntax (yyjson) -> top-level object ->
  the 15 wire fields from one `json_transform` plus `json_keys`. Three tiers: most lines (no `null`, keys = the
  known fields present) are exact from the transform; lines with unknown keys or nulls take presence from the key
  list; lines with a repeated key (pydantic keeps the last copy, yyjson the first) are redone from `json_each`
  (`jsonl_dupkey_fields_sql`). Where yyjson is more lenient than pydantic's parser (trailing commas, `nan`/`inf`
  spellings, nesting beyond level 201), flagged lines are re-checked by `LEX_FIX_SQL`. The input limits of
  `schemas.events.decode` come first: a line longer than the maximum record size is `too_large` without being
  decoded; one whose brackets nest deeper than MAX_JSON_DEPTH is `too_large` (`DEPTH_FIX_SQL`).
* `.parquet` (engine.py): typed columns, null = absent field (as `schemas.events.decode_mapping`).

Both produce, per record and wire field `f`: `k_f` (kind: NULL absent, 'null', 's' string, 'i' integer fitting
64 bits, 'I'/'N' larger positive/negative integer, 't' typed timestamp, 'o' other), `s_f` (string value) and
`i_f` (integer value). `validate_sql` applies the rules of `schemas/events.py` in pydantic's field order, so the
first failing field names the reason (`missing_field:f` / `invalid_field:f` / `invalid_timestamp`), after
`invalid_utf8`, `invalid_json`, `not_an_object`, `missing_field:type` and `unknown_type`. A timezone that makes
zoneinfo raise something other than ValueError (e.g. a directory name such as `Europe`) escapes pydantic's
validators and becomes `invalid_json` in decode(), and here too. Timezone names are judged by zoneinfo itself (the
`ccm_zone_status` scalar function, called once per plan row). Numbers are bounded as in schemas/events.py
(`COUNT_LIMIT`, `GRACE_MINUTES_LIMIT`): an integer beyond 64 bits is out of every bound.

`occurred_at` text must match the strict RFC 3339 pattern of SPEC section 3 (`schemas.events.TIMESTAMP_PATTERN`,
the contract shared by both engines and the JSON Schema); DuckDB's own TIMESTAMPTZ cast then checks the day of
the month and converts to UTC (it truncates digits beyond microseconds), independently of CPython's parser. The
UTC instant must lie in the years 1970..9998, as must a typed Parquet timestamp; otherwise `invalid_timestamp`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from schemas.events import (
    CONTACT_CENTER_PAGES,
    COUNT_LIMIT,
    ESCAPE_PATTERN,
    EVENT_TYPES,
    GRACE_MINUTES_LIMIT,
    MAX_JSON_DEPTH,
    MAX_RECORD_BYTES,
    MAX_YEAR,
    MIN_YEAR,
    STRING_PATTERN,
    TIMESTAMP_PATTERN,
)

FIELDS: tuple[str, ...] = (
    "event_id",
    "type",
    "account_id",
    "occurred_at",
    "schema_version",
    "user_id",
    "device_id",
    "page",
    "endpoint",
    "licenses",
    "overage_allowance",
    "billing_anchor_day",
    "timezone",
    "grace_minutes",
    "grace_mode",
)

DEVICE_TYPES: tuple[str, ...] = (
    "desktop.signed_in",
    "desktop.signed_out",
    "desktop.heartbeat",
    "work_session.started",
    "work_session.ended",
)

# Fields of each type after the common ones, in pydantic's validation order (the first error names the reason).
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    **{name: ("user_id", "device_id") for name in DEVICE_TYPES},
    "portal.page_viewed": ("user_id", "page"),
    "portal.signed_out": ("user_id",),
    "api.request": ("user_id", "endpoint"),
    "account.plan_changed": (
        "licenses",
        "overage_allowance",
        "billing_anchor_day",
        "timezone",
        "grace_minutes",
        "grace_mode",
    ),
}
COMMON_FIELDS: tuple[str, ...] = ("event_id", "account_id", "occurred_at", "schema_version")
ID_FIELDS: frozenset[str] = frozenset({"event_id", "account_id", "user_id", "device_id"})


def _sql_list(values: Iterable[object]) -> str:
    return "(" + ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) + ")"


EVENT_TYPES_SQL = _sql_list(EVENT_TYPES)
CC_PAGES_SQL = _sql_list(sorted(CONTACT_CENTER_PAGES))

# --- timestamps -------------------------------------------------------------------------------------------------

# UTC milliseconds of the first instant of MIN_YEAR and of the year after MAX_YEAR (exclusive end).
MIN_MS = int(datetime(MIN_YEAR, 1, 1, tzinfo=UTC).timestamp()) * 1000
END_MS = int(datetime(MAX_YEAR + 1, 1, 1, tzinfo=UTC).timestamp()) * 1000
_TS_PATTERN_SQL = TIMESTAMP_PATTERN.replace("'", "''")

MACROS_SQL = f"""
CREATE OR REPLACE TEMP MACRO ccm_fdiv(a, b) AS (a - (((a % b) + b) % b)) // b;
CREATE OR REPLACE TEMP MACRO ccm_ts_in_range(ms) AS ms >= {MIN_MS} AND ms < {END_MS};
"""


def timestamp_sql(inner: str) -> str:
    """Wrap a query with a VARCHAR column `ts_raw`: adds `ts_state` ('ok', 'invalid') and `ts_ms` (when 'ok').

    Only the strict RFC 3339 shape reaches DuckDB's TIMESTAMPTZ cast (upper-cased: the shape allows `t` and `z`),
    which rejects days that do not exist in their month.
    """
    return f"""
SELECT * EXCLUDE (_ts_ms),
  CASE WHEN ts_raw IS NULL THEN NULL WHEN ccm_ts_in_range(_ts_ms) THEN 'ok' ELSE 'invalid' END AS ts_state,
  CASE WHEN ccm_ts_in_range(_ts_ms) THEN _ts_ms END AS ts_ms
FROM (
  SELECT *,
    CASE WHEN regexp_full_match(ts_raw, '{_TS_PATTERN_SQL}')
         THEN ccm_fdiv(epoch_us(TRY_CAST(upper(ts_raw) AS TIMESTAMPTZ)), 1000) END AS _ts_ms
  FROM ({inner})
)
"""


# --- JSON lines --------------------------------------------------------------------------------------------------

_TRANSFORM = "{" + ", ".join(f'"{name}": "JSON"' for name in FIELDS) + "}"
_LEX_NUMBER = r"-?[0-9]+(?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?"
_LEX_STRING = r'"(?:[^"\\]|\\.)*"'
# pydantic's JSON parser (jiter) accepts NaN, Infinity and -Infinity; yyjson also other spellings (nan, inf, -NaN..).
LEX_MACRO_SQL = f"""
CREATE OR REPLACE TEMP MACRO ccm_lex_bare(s) AS
  NOT regexp_matches(s, ',[ \\t\\n\\r]*[\\]}}]')
  AND len(list_filter(regexp_extract_all(regexp_replace(s, '{_LEX_NUMBER}', '0', 'g'), '-?[A-Za-z]+'),
                      lambda t: t NOT IN ('true', 'false', 'null', 'NaN', 'Infinity', '-Infinity'))) = 0;
CREATE OR REPLACE TEMP MACRO ccm_lex_ok(txt) AS ccm_lex_bare(regexp_replace(txt, '{_LEX_STRING}', '""', 'g'));
"""


def _kinds(field: str, present: str, text: str) -> str:
    """k_ (kind) and s_ (string value) of one field from its presence flag and JSON text."""
    kind = (
        f"CASE WHEN NOT {present} THEN NULL WHEN {text} IS NULL THEN 'null' WHEN starts_with({text}, '\"') THEN 's' "
        f"WHEN NOT regexp_full_match({text}, '-?[0-9]+') THEN 'o' "
        f"WHEN TRY_CAST({text} AS BIGINT) IS NOT NULL THEN 'i' WHEN starts_with({text}, '-') THEN 'N' ELSE 'I' END"
    )
    string = (
        f"CASE WHEN starts_with({text}, '\"') THEN CASE WHEN contains({text}, '\\') "
        f"THEN json_extract_string({text}, '$') ELSE {text}[2:-2] END END"
    )
    return f"{kind} AS k_{field}, {string} AS s_{field}"


def _integers(struct: str) -> str:
    return ", ".join(f"CASE WHEN k_{f} = 'i' THEN TRY_CAST({struct}.{f} AS BIGINT) END AS i_{f}" for f in FIELDS)


def jsonl_fields_sql(raw: str, max_bytes: int = MAX_RECORD_BYTES) -> str:
    """Kinds and values of the wire fields per line of `raw` (seq, arrival, line BLOB, size: the line's bytes
    without its line break), in one pass. A line of more than `max_bytes` is `too_large` and is not decoded.

    The fields come from one `json_transform` (first copy of a key; JSON null and absent both NULL), the key list
    from `json_keys`. Tier 1: no `null` anywhere and as many keys as non-null known fields, so the keys are exactly
    the known fields present, once each, and transform's values are exact. Tier 2: the top-level keys are distinct,
    so presence comes from the key list. Tier 3: a key repeats (pydantic keeps its last copy): these rows are redone
    by `jsonl_dupkey_fields_sql`.
    """
    kinds = ", ".join(
        _kinds(f, f"(CASE WHEN tier = 1 THEN tj.{f} IS NOT NULL ELSE list_contains(keys, '{f}') END)", f"tj.{f}")
        for f in FIELDS
    )
    known = " + ".join(f"(tj.{f} IS NOT NULL)::INT" for f in FIELDS)
    return f"""
SELECT * EXCLUDE (tj, keys), {_integers("tj")}
FROM (
  SELECT seq, arrival, txt, syn AS pre_reason, NULL::BIGINT AS t_ms, tier, tj, keys, {kinds}
  FROM (
    SELECT *,
      CASE WHEN syn IS NOT NULL THEN NULL
           WHEN NOT contains(txt, 'null') AND len(keys) = {known} THEN 1
           WHEN len(keys) = len(list_distinct(keys)) THEN 2 ELSE 3 END AS tier
    FROM (
      SELECT *,
        CASE WHEN syn IS NULL THEN json_transform(txt, '{_TRANSFORM}') END AS tj,
        CASE WHEN syn IS NULL THEN json_keys(txt) END AS keys
      FROM (
        SELECT seq, arrival, txt,
          CASE WHEN big THEN 'too_large'
               WHEN txt IS NULL THEN 'invalid_utf8'
               WHEN NOT json_valid(txt) THEN 'invalid_json'
               WHEN left(ltrim(txt, ' ' || chr(9) || chr(10) || chr(13)), 1) <> '{{' THEN 'not_an_object'
          END AS syn
        FROM (SELECT seq, arrival, size > {int(max_bytes)} AS big,
                CASE WHEN size <= {int(max_bytes)} THEN try(decode(line)) END AS txt FROM {raw})
      )
    )
  )
)
"""


def jsonl_dupkey_fields_sql(raw: str, seqs: str) -> str:
    """`jsonl_fields_sql` columns for the lines of `raw` whose seq is in `seqs`: the last copy of each key wins."""
    last = ", ".join(
        f"arg_max({{'v': CASE WHEN type = 'NULL' THEN NULL ELSE value END}}, id) FILTER (WHERE key = '{f}') AS l_{f}"
        for f in FIELDS
    )
    kinds = ", ".join(_kinds(f, f"(l.l_{f} IS NOT NULL)", f"l.l_{f}.v") for f in FIELDS)
    texts = "{" + ", ".join(f"'{f}': l.l_{f}.v" for f in FIELDS) + "}"
    return f"""
SELECT * EXCLUDE (tj), {_integers("tj")}
FROM (
  SELECT seq, arrival, txt, NULL::VARCHAR AS pre_reason, NULL::BIGINT AS t_ms, 3 AS tier, {texts} AS tj, {kinds}
  FROM (
    SELECT seq, arrival, any_value(txt) AS txt, {last}
    FROM (SELECT r.seq, r.arrival, r.txt, e.key, e.value, e.type, e.id
          FROM (SELECT seq, arrival, try(decode(line)) AS txt FROM {raw} SEMI JOIN {seqs} USING (seq)) AS r,
               json_each(r.txt) AS e)
    GROUP BY seq, arrival
  ) AS l
)
"""


# pydantic's JSON parser (jiter) refuses nesting deeper than this: a scalar or a container inside n containers is at
# level n + 1 (object keys do not count).
MAX_JSON_LEVEL = 201


def jsonl_checked_sql(fields: str) -> str:
    """Validated JSON records for `parsed`, with `needs_lex`: yyjson accepted the line, but pydantic's parser may
    not (trailing commas; NaN, Infinity and -Infinity only; nesting): `LEX_FIX_SQL` decides for these few lines.
    Lines with more than MAX_JSON_DEPTH opening brackets are flagged too, for `DEPTH_FIX_SQL`."""
    validated = validate_sql(fields, keep="txt, tier")
    opens = "strlen(txt) - strlen(replace(replace(txt, '[', ''), '{', ''))"
    return f"""
SELECT * EXCLUDE (txt, extra_known),
  CASE WHEN strlen(txt) > {MAX_JSON_DEPTH} AND {opens} > {MAX_JSON_DEPTH} THEN TRUE
       WHEN txt IS NULL OR reason IN ('invalid_utf8', 'invalid_json') THEN FALSE
       WHEN strlen(txt) > {2 * MAX_JSON_LEVEL} THEN TRUE
       WHEN regexp_matches(txt, ',[ \\t\\n\\r]*[\\]}}]') THEN TRUE
       WHEN tier = 1 AND reason IS NULL AND NOT extra_known THEN FALSE
       ELSE regexp_matches(txt, '[nN][aA][nN]|[iI][nN][fF]') END AS needs_lex
FROM ({validated})
"""


# `{raw}`: the (seq, line) of the records flagged needs_lex. The nesting level comes from the line reduced to
# brackets and one `0` per scalar (strings, numbers, literals; keys dropped), walked with a running sum.
LEX_FIX_SQL = f"""
UPDATE parsed SET reason = 'invalid_json'
WHERE seq IN (
  SELECT seq FROM {{raw}} WHERE NOT ccm_lex_ok(try(decode(line)))
  UNION ALL
  SELECT seq FROM (
    SELECT seq, ch, sum(CASE WHEN ch IN ('[', '{{{{') THEN 1 WHEN ch IN (']', '}}}}') THEN -1 ELSE 0 END)
                      OVER (PARTITION BY seq ORDER BY pos ROWS UNBOUNDED PRECEDING) AS n
    FROM (
      SELECT seq, unnest(chars) AS ch, unnest(range(len(chars))) AS pos
      FROM (
        SELECT seq, string_split(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
                 try(decode(line)), '{_LEX_STRING}', '"', 'g'), '"[ \\t\\n\\r]*:', '', 'g'),
                 '"|-?[0-9][-+.eE0-9]*|[A-Za-z]+', '0', 'g'), '[^\\[\\]{{{{}}}}0]', '', 'g'), '') AS chars
        FROM {{raw}} WHERE strlen(try(decode(line))) > {2 * MAX_JSON_LEVEL}
      )
    )
  )
  GROUP BY seq
  HAVING max(CASE WHEN ch IN ('[', '{{{{') THEN n WHEN ch = '0' THEN n + 1 END) > {MAX_JSON_LEVEL}
)
"""


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# `{raw}`: the (seq, line) of the records flagged needs_lex. Nesting deeper than MAX_JSON_DEPTH is `too_large`
# (schemas.events.too_deep, independently): escape pairs and then string literals removed, the brackets left are
# walked with a running sum (every opening one +1, every closing one -1). It runs after LEX_FIX_SQL and wins.
DEPTH_FIX_SQL = f"""
UPDATE parsed SET reason = 'too_large'
WHERE seq IN (
  SELECT seq FROM (
    SELECT seq, sum(CASE WHEN ch IN ('[', '{{{{') THEN 1 ELSE -1 END)
                  OVER (PARTITION BY seq ORDER BY pos ROWS UNBOUNDED PRECEDING) AS n
    FROM (
      SELECT seq, unnest(chars) AS ch, unnest(range(len(chars))) AS pos
      FROM (
        SELECT seq, string_split(regexp_replace(regexp_replace(regexp_replace(
                 try(decode(line)), {_sql_text(ESCAPE_PATTERN)}, '', 'g'), {_sql_text(STRING_PATTERN)}, '', 'g'),
                 '[^\\[\\]{{{{}}}}]', '', 'g'), '') AS chars
        FROM {{raw}}
      )
    )
  )
  GROUP BY seq
  HAVING max(n) > {MAX_JSON_DEPTH}
)
"""


# --- field rules (both readers) ------------------------------------------------------------------------------------


def _field_error(field: str) -> str:
    """SQL CASE branch list: the reason for `field` if it breaks its rule (schemas/events.py)."""
    k, s, i = f"k_{field}", f"s_{field}", f"i_{field}"
    missing = f"WHEN {k} IS NULL THEN 'missing_field:{field}' "
    bad = f"'invalid_field:{field}'"
    if field in ID_FIELDS:
        return missing + f"WHEN {k} <> 's' OR length({s}) NOT BETWEEN 1 AND 128 THEN {bad} "
    if field == "occurred_at":
        return missing + f"WHEN {k} NOT IN ('s', 't') THEN {bad} WHEN ts_state <> 'ok' THEN 'invalid_timestamp' "
    if field == "schema_version":
        return f"WHEN {k} IS NOT NULL AND NOT ({k} = 'i' AND {i} BETWEEN 1 AND {COUNT_LIMIT - 1}) THEN {bad} "
    if field == "page":
        return missing + f"WHEN {k} <> 's' THEN {bad} "
    if field == "endpoint":
        return f"WHEN {k} NOT IN ('null', 's') THEN {bad} "
    if field in ("licenses", "overage_allowance"):
        return missing + f"WHEN NOT ({k} = 'i' AND {i} BETWEEN 0 AND {COUNT_LIMIT - 1}) THEN {bad} "
    if field == "billing_anchor_day":
        return missing + f"WHEN NOT ({k} = 'i' AND {i} BETWEEN 1 AND 28) THEN {bad} "
    if field == "timezone":
        return missing + f"WHEN {k} <> 's' OR tz_status IS DISTINCT FROM 'ok' THEN {bad} "
    if field == "grace_minutes":
        return f"WHEN {k} IS NOT NULL AND NOT ({k} = 'i' AND {i} BETWEEN 0 AND {GRACE_MINUTES_LIMIT - 1}) THEN {bad} "
    if field == "grace_mode":
        return f"WHEN {k} IS NOT NULL AND NOT ({k} = 's' AND {s} IN ('contiguous', 'cumulative')) THEN {bad} "
    raise ValueError(field)


def _reason_sql() -> str:
    per_type = " ".join(
        f"WHEN s_type = '{name}' THEN CASE {''.join(_field_error(f) for f in COMMON_FIELDS + fields)} END"
        for name, fields in TYPE_FIELDS.items()
    )
    return f"""CASE
      WHEN pre_reason IS NOT NULL THEN pre_reason
      WHEN k_type IS NULL THEN 'missing_field:type'
      WHEN k_type <> 's' OR s_type NOT IN {EVENT_TYPES_SQL} THEN 'unknown_type'
      -- an OSError (a zoneinfo key naming a directory) escapes pydantic's validators: decode() reports
      -- invalid_json whatever the other fields hold
      WHEN s_type = 'account.plan_changed' AND tz_status = 'crash' THEN 'invalid_json'
      {per_type}
    END"""


def _extra_known_sql() -> str:
    """True when a known field that the record's type does not use is present (pydantic ignores it)."""
    branches = " ".join(
        f"WHEN s_type = '{name}' THEN "
        + (" OR ".join(f"k_{f} IS NOT NULL" for f in FIELDS if f not in COMMON_FIELDS + fields + ("type",)) or "FALSE")
        for name, fields in TYPE_FIELDS.items()
    )
    return f"CASE {branches} ELSE FALSE END"


def validate_sql(fields: str, keep: str = "") -> str:
    """Reason (NULL = valid) and the normalised event columns per record of `fields`.

    `fields` has seq, arrival, pre_reason, t_ms (a typed Parquet timestamp, else NULL) and k_/s_/i_ columns per
    wire field. The scalar function `ccm_zone_status(name)` gives zoneinfo's verdict on a timezone string ('ok',
    'invalid', 'crash'). `keep` lists more columns of `fields` to pass through; `extra_known` is always added.
    """
    with_ts = timestamp_sql(f"SELECT *, CASE WHEN k_occurred_at = 's' THEN s_occurred_at END AS ts_raw FROM ({fields})")
    is_plan = "s_type = 'account.plan_changed'"
    return f"""
SELECT seq, arrival, reason,
  CASE WHEN reason IS NULL THEN s_event_id END AS event_id,
  CASE WHEN reason IS NULL THEN s_type END AS type,
  CASE WHEN reason IS NULL THEN s_account_id END AS account_id,
  CASE WHEN reason IS NULL THEN at_ms END AS at_ms,
  CASE WHEN reason IS NULL THEN coalesce(i_schema_version, CASE WHEN k_schema_version IS NULL THEN 1 END)
       END AS schema_version,
  CASE WHEN reason IS NULL AND NOT {is_plan} THEN s_user_id END AS user_id,
  CASE WHEN reason IS NULL AND s_type IN {_sql_list(DEVICE_TYPES)} THEN s_device_id END AS device_id,
  CASE WHEN reason IS NULL AND s_type = 'portal.page_viewed' THEN s_page END AS page,
  CASE WHEN reason IS NULL AND s_type = 'api.request' AND k_endpoint = 's' THEN s_endpoint END AS endpoint,
  CASE WHEN reason IS NULL AND {is_plan} THEN i_licenses END AS licenses,
  CASE WHEN reason IS NULL AND {is_plan} THEN i_overage_allowance END AS overage_allowance,
  CASE WHEN reason IS NULL AND {is_plan} THEN i_billing_anchor_day END AS billing_anchor_day,
  CASE WHEN reason IS NULL AND {is_plan} THEN s_timezone END AS timezone,
  CASE WHEN reason IS NULL AND {is_plan} THEN coalesce(i_grace_minutes, 30) END AS grace_minutes,
  CASE WHEN reason IS NULL AND {is_plan} THEN coalesce(s_grace_mode, 'contiguous') END AS grace_mode,
  {_extra_known_sql()} AS extra_known{", " + keep if keep else ""}
FROM (
  SELECT *, {_reason_sql()} AS reason
  FROM (
    SELECT * EXCLUDE (ts_state), coalesce(t_ms, ts_ms) AS at_ms,
      CASE WHEN t_ms IS NULL THEN ts_state WHEN ccm_ts_in_range(t_ms) THEN 'ok' ELSE 'invalid' END AS ts_state,
      CASE WHEN {is_plan} AND k_timezone = 's' THEN ccm_zone_status(s_timezone) END AS tz_status
    FROM ({with_ts})
  )
)
"""
