"""Wire validation in DuckDB SQL: the same verdicts and reasons as `schemas.events.decode`, set-based.

Two readers feed one validation stage (`validate_sql`):

* `.jsonl` (`jsonl_fields_sql`): raw line (BLOB) -> UTF-8 check -> JSON syntax (yyjson) -> top-level object ->
  the 15 wire fields from one `json_transform` plus `json_keys`. Three tiers: most lines (no `null`, keys = the
  known fields present) are exact from the transform; lines with unknown keys or nulls take presence from the key
  list; lines with a repeated key (pydantic keeps the last copy, yyjson the first) are redone from `json_each`
  (`jsonl_dupkey_fields_sql`). Where yyjson is more lenient than pydantic's parser (trailing commas, `nan`/`inf`
  spellings, nesting beyond level 201), flagged lines are re-checked by `LEX_FIX_SQL`.
* `.parquet` (engine.py): typed columns, null = absent field (as `schemas.events.decode_mapping`).

Both produce, per record and wire field `f`: `k_f` (kind: NULL absent, 'null', 's' string, 'i' integer fitting
64 bits, 'I'/'N' larger positive/negative integer, 't' typed timestamp, 'o' other), `s_f` (string value) and
`i_f` (integer value). `validate_sql` applies the rules of `schemas/events.py` in pydantic's field order, so the
first failing field names the reason (`missing_field:f` / `invalid_field:f`), after `invalid_utf8`,
`invalid_json`, `not_an_object`, `missing_field:type` and `unknown_type`. Exceptions that escape pydantic's
validators become `invalid_json` in decode(), and here too: an `occurred_at` whose UTC conversion overflows, a
timezone that makes zoneinfo raise something other than ValueError (e.g. a directory name such as `Europe`).
Timezone names are judged by zoneinfo itself (the `ccm_zone_status` scalar function, called once per plan row).

`occurred_at` text is parsed by a transcription of CPython 3.11's `datetime.fromisoformat` as called by
`parse_timestamp` (str.strip, length >= 20, separator `T`/`t`/space at index 10, trailing `Z`/`z`, offset
required), including its lenient corners: a fraction after the hour or minute, one ignored character after a
component, `,` and `:` before a fraction, digits beyond microseconds skipped, ISO week dates (`2026-W45-1`, and
`2026W45` plus any separator character), offsets with seconds and fractions (a fraction is ignored when the
offset's whole seconds are 0), offset minutes not range-checked. The canonical shape takes a fast path through
DuckDB's TIMESTAMPTZ cast, restricted to where that cast provably agrees (see CANON_TS).

Residual differences (not reproduced, tested around):
* U+0000 inside `occurred_at`: CPython's C parser treats it as the end of the text in some checks; here it is an
  ordinary character, so a few such values that decode() accepts are rejected.
* Integers beyond 64 bits in `licenses`, `overage_allowance` and `grace_minutes` are valid for decode() (Python
  ints) but rejected here (`invalid_field`); `schema_version` beyond 64 bits is accepted by both.
* The transcription follows CPython 3.11 (the project's interpreter); later versions changed `fromisoformat`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from schemas.events import CONTACT_CENTER_PAGES, EVENT_TYPES

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

# Characters that Python's str.strip() removes (str.isspace), as an RE2 class.
_PY_SPACE = "".join(f"\\x{{{c:x}}}" for c in range(sys.maxunicode + 1) if chr(c).isspace())
PY_SPACE_CLASS = f"[{_PY_SPACE}]"

# --- timestamps -------------------------------------------------------------------------------------------------

# The common shape, 2026-11-02T09:00:00[.fff...](Z|+hh:mm), with hours below 24 and offsets below 24 h, years
# 0002..9998 (no overflow at the edges). There DuckDB's TIMESTAMPTZ cast agrees with CPython (it truncates beyond
# microseconds and rejects what CPython rejects); a value it rejects takes the general path, which decides.
CANON_TS = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}(?:[.][0-9]+)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
# Dates: YYYY-MM-DD and YYYY-Www-D (separator at index 10), or YYYYWww plus any one separator character: CPython then
# reads the time from index 8, so only `HH` + the `T`/`t`/space at index 10 + an offset from index 11 can pass.
DATE_RE = r"^([0-9]{4})(?:-(?:([0-9]{2})-([0-9]{2})|W([0-9]{2})-([0-9]))|W([0-9]{2})(?s:.))"
SPLIT_RE = r"^(?s)(?P<a>[^Z+\-]*)(?P<sg>[Z+\-])(?P<b>.*)$"
# Time before the offset (CPython's parse_hh_mm_ss_ff with the offset character after it). `a` is one byte that the
# C parser reads and ignores; F is a fraction: up to 6 digits to the end, or 6 digits and then anything.
_A = r"[\x00-\x7f]"
_F = r"(?:[0-9]{1,6}|[0-9]{6}(?s:.)+)"
_F2 = r"(?:[0-9]{2,6}|[0-9]{6}(?s:.)+)"
TIME_RE = (
    r"^(?P<h>[0-9]{2})(?:" + _A + r"?"
    r"|[.,](?P<f1>" + _F + r")"
    r"|:(?P<m1>[0-9]{2})(?:" + _A + r"?|[.,](?P<f2>" + _F + r")"
    r"|:(?P<s1>[0-9]{2})(?:" + _A + r"?|[:.,](?P<f3>" + _F + r")))"
    r"|(?P<m2>[0-9]{2})(?:" + _A + r"?|[.,](?P<f4>" + _F + r")"
    r"|(?P<s2>[0-9]{2})(?:" + _A + r"?|[.,](?P<f5>" + _F + r")|(?P<f6>" + _F2 + r"))))$"
)
# The offset after the sign: the same grammar, but it must end exactly at the end of the text.
OFFSET_RE = (
    r"^(?P<h>[0-9]{2})(?:"
    r"|[.,](?P<f1>[0-9]+)"
    r"|:(?P<m1>[0-9]{2})(?:|[.,](?P<f2>[0-9]+)|:(?P<s1>[0-9]{2})(?:|[:.,](?P<f3>[0-9]+)))"
    r"|(?P<m2>[0-9]{2})(?:|[.,](?P<f4>[0-9]+)|(?P<s2>[0-9]{2})(?:|[.,](?P<f5>[0-9]+)|(?P<f6>[0-9]{2,}))))$"
)

MACROS_SQL = """
CREATE OR REPLACE TEMP MACRO ccm_fdiv(a, b) AS (a - (((a % b) + b) % b)) // b;
CREATE OR REPLACE TEMP MACRO ccm_leap(y) AS ((y % 4 = 0 AND y % 100 <> 0) OR y % 400 = 0);
CREATE OR REPLACE TEMP MACRO ccm_dim(y, m) AS
  CASE WHEN m = 2 THEN CASE WHEN ccm_leap(y) THEN 29 ELSE 28 END
       WHEN m IN (4, 6, 9, 11) THEN 30 ELSE 31 END;
-- days since 1970-01-01 of a proleptic Gregorian date with y >= 1 (H. Hinnant's days_from_civil)
CREATE OR REPLACE TEMP MACRO ccm_days(y, m, d) AS (
  ((y - CASE WHEN m <= 2 THEN 1 ELSE 0 END) // 400) * 146097
  + ((y - CASE WHEN m <= 2 THEN 1 ELSE 0 END) % 400) * 365
  + ((y - CASE WHEN m <= 2 THEN 1 ELSE 0 END) % 400) // 4
  - ((y - CASE WHEN m <= 2 THEN 1 ELSE 0 END) % 400) // 100
  + (153 * (m + CASE WHEN m > 2 THEN -3 ELSE 9 END) + 2) // 5 + d - 1
  - 719468);
-- ISO weekday (Monday 1 .. Sunday 7) of a day number
CREATE OR REPLACE TEMP MACRO ccm_isodow(days) AS ((((days + 3) % 7) + 7) % 7) + 1;
CREATE OR REPLACE TEMP MACRO ccm_weeks(y) AS
  CASE WHEN ccm_isodow(ccm_days(y, 1, 1)) = 4
         OR (ccm_isodow(ccm_days(y, 1, 1)) = 3 AND ccm_leap(y)) THEN 53 ELSE 52 END;
CREATE OR REPLACE TEMP MACRO ccm_week_days(y, w, wd) AS
  ccm_days(y, 1, 4) - (ccm_isodow(ccm_days(y, 1, 4)) - 1) + (w - 1) * 7 + (wd - 1);
CREATE OR REPLACE TEMP MACRO ccm_us6(f) AS
  CASE WHEN f IS NULL OR f = '' THEN 0 ELSE rpad(left(f, 6), 6, '0')::BIGINT END;
"""

# Days 0001-01-01 and 10000-01-01 (exclusive end of Python's datetime range).
MIN_DAYS = -719162
END_DAYS = 2932897
DAY_US = 86_400_000_000


_TS_HELPERS = (
    "_fast, _t0, _t1, _g_date, _g_split, _g_time, _g_off, _y, _mo, _d, _wk, _wd, _hh, _mi, _ss, _us, _sg, _oh, _om, "
    "_os, _ous, _syntax, _date_ok, _days, _off_us, _utc_us"
)
# regexp_extract names capture groups by position: this is the order of the groups in TIME_RE and OFFSET_RE.
_GROUPS = "['h', 'f1', 'm1', 'f2', 's1', 'f3', 'm2', 'f4', 's2', 'f5', 'f6']"


def timestamp_sql(inner: str) -> str:
    """Wrap a query with a VARCHAR column `ts_raw`: adds `ts_state` ('ok', 'invalid', 'overflow') and `ts_ms`."""
    return f"""
SELECT * EXCLUDE ({_TS_HELPERS}),
  CASE WHEN ts_raw IS NULL THEN NULL
       WHEN _fast IS NOT NULL THEN 'ok'
       WHEN _syntax AND _date_ok AND _hh <= 23 AND _mi <= 59 AND _ss <= 59 AND abs(_off_us) < {DAY_US} THEN
         CASE WHEN _utc_us >= {MIN_DAYS}::BIGINT * {DAY_US} AND _utc_us < {END_DAYS}::BIGINT * {DAY_US}
              THEN 'ok' ELSE 'overflow' END
       ELSE 'invalid' END AS ts_state,
  CASE WHEN _fast IS NOT NULL THEN ccm_fdiv(epoch_us(_fast), 1000)
       WHEN _syntax AND _date_ok AND _hh <= 23 AND _mi <= 59 AND _ss <= 59 AND abs(_off_us) < {DAY_US}
       THEN ccm_fdiv(_utc_us, 1000) END AS ts_ms
FROM (
SELECT *,
  CASE WHEN _syntax AND _date_ok THEN
    _days * {DAY_US} + _hh * 3600000000 + _mi * 60000000 + _ss * 1000000 + _us - _off_us END AS _utc_us
FROM (
SELECT *,
  CASE WHEN NOT _syntax OR _y < 1 THEN FALSE
       WHEN _wk IS NOT NULL THEN _wk BETWEEN 1 AND ccm_weeks(_y) AND _wd BETWEEN 1 AND 7
            AND ccm_week_days(_y, _wk, _wd) BETWEEN {MIN_DAYS} AND {END_DAYS - 1}
       ELSE _mo BETWEEN 1 AND 12 AND _d BETWEEN 1 AND ccm_dim(_y, _mo) END AS _date_ok,
  CASE WHEN NOT _syntax OR _y < 1 THEN NULL
       WHEN _wk IS NOT NULL THEN ccm_week_days(_y, _wk, _wd)
       WHEN _mo BETWEEN 1 AND 12 THEN ccm_days(_y, _mo, _d) END AS _days,
  -- CPython ignores the offset's fraction when its whole seconds are 0 (the offset is then UTC)
  CASE WHEN _oh * 3600 + _om * 60 + _os = 0 THEN 0
       ELSE CASE WHEN _sg = '-' THEN -1 ELSE 1 END * ((_oh * 3600 + _om * 60 + _os) * 1000000 + _ous) END AS _off_us
FROM (
SELECT *,
  TRY_CAST(_g_date.y AS BIGINT) AS _y,
  TRY_CAST(nullif(_g_date.mo, '') AS BIGINT) AS _mo,
  TRY_CAST(nullif(_g_date.d, '') AS BIGINT) AS _d,
  TRY_CAST(coalesce(nullif(_g_date.wk, ''), nullif(_g_date.bw, '')) AS BIGINT) AS _wk,
  CASE WHEN _g_date.bw <> '' THEN 1 ELSE TRY_CAST(nullif(_g_date.wd, '') AS BIGINT) END AS _wd,
  TRY_CAST(_g_time.h AS BIGINT) AS _hh,
  TRY_CAST(coalesce(nullif(_g_time.m1, ''), nullif(_g_time.m2, ''), '0') AS BIGINT) AS _mi,
  TRY_CAST(coalesce(nullif(_g_time.s1, ''), nullif(_g_time.s2, ''), '0') AS BIGINT) AS _ss,
  ccm_us6(_g_time.f1 || _g_time.f2 || _g_time.f3 || _g_time.f4 || _g_time.f5 || _g_time.f6) AS _us,
  _g_split.sg AS _sg,
  TRY_CAST(_g_off.h AS BIGINT) AS _oh,
  TRY_CAST(coalesce(nullif(_g_off.m1, ''), nullif(_g_off.m2, ''), '0') AS BIGINT) AS _om,
  TRY_CAST(coalesce(nullif(_g_off.s1, ''), nullif(_g_off.s2, ''), '0') AS BIGINT) AS _os,
  ccm_us6(_g_off.f1 || _g_off.f2 || _g_off.f3 || _g_off.f4 || _g_off.f5 || _g_off.f6) AS _ous,
  coalesce(_g_date.y <> '' AND _g_split.sg IN ('+', '-') AND _g_time.h <> '' AND _g_off.h <> '', FALSE) AS _syntax
FROM (
SELECT *,
  CASE WHEN _g_split.sg IN ('+', '-') THEN regexp_extract(_g_split.a, '{TIME_RE}', {_GROUPS}) END AS _g_time,
  CASE WHEN _g_split.sg IN ('+', '-') THEN regexp_extract(_g_split.b, '{OFFSET_RE}', {_GROUPS}) END AS _g_off
FROM (
SELECT *,
  CASE WHEN _g_date.y <> '' THEN regexp_extract(substr(_t1, CASE WHEN _g_date.bw <> '' THEN 9 ELSE 12 END),
       '{SPLIT_RE}', ['a', 'sg', 'b']) END AS _g_split
FROM (
SELECT *,
  CASE WHEN _t1 IS NOT NULL THEN regexp_extract(_t1, '{DATE_RE}', ['y', 'mo', 'd', 'wk', 'wd', 'bw']) END AS _g_date
FROM (
SELECT *,
  CASE WHEN _t0 IS NULL OR length(_t0) < 20 OR substr(_t0, 11, 1) NOT IN ('T', 't', ' ') THEN NULL
       WHEN right(_t0, 1) IN ('Z', 'z') THEN left(_t0, length(_t0) - 1) || '+00:00'
       ELSE _t0 END AS _t1
FROM (
SELECT *,
  CASE WHEN ts_raw IS NULL OR _fast IS NOT NULL THEN NULL
       ELSE regexp_replace(ts_raw, '^{PY_SPACE_CLASS}+|{PY_SPACE_CLASS}+$', '', 'g') END AS _t0
FROM (
SELECT *,
  CASE WHEN regexp_full_match(ts_raw, '{CANON_TS}') AND substr(ts_raw, 1, 4) BETWEEN '0002' AND '9998'
       THEN TRY_CAST(ts_raw AS TIMESTAMPTZ) END AS _fast
FROM ({inner})
)))))))))
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


def jsonl_fields_sql(raw: str) -> str:
    """Kinds and values of the wire fields per line of `raw` (seq, arrival, line BLOB), in one pass.

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
          CASE WHEN txt IS NULL THEN 'invalid_utf8'
               WHEN NOT json_valid(txt) THEN 'invalid_json'
               WHEN left(ltrim(txt, ' ' || chr(9) || chr(10) || chr(13)), 1) <> '{{' THEN 'not_an_object'
          END AS syn
        FROM (SELECT seq, arrival, try(decode(line)) AS txt FROM {raw})
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
    not (trailing commas; NaN, Infinity and -Infinity only; nesting): `LEX_FIX_SQL` decides for these few lines."""
    validated = validate_sql(fields, keep="txt, tier")
    return f"""
SELECT * EXCLUDE (txt, extra_known),
  CASE WHEN txt IS NULL OR reason IN ('invalid_utf8', 'invalid_json') THEN FALSE
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


# --- field rules (both readers) ------------------------------------------------------------------------------------


def _field_error(field: str) -> str:
    """SQL CASE branch list: the reason for `field` if it breaks its rule (schemas/events.py)."""
    k, s, i = f"k_{field}", f"s_{field}", f"i_{field}"
    missing = f"WHEN {k} IS NULL THEN 'missing_field:{field}' "
    bad = f"'invalid_field:{field}'"
    if field in ID_FIELDS:
        return missing + f"WHEN {k} <> 's' OR length({s}) NOT BETWEEN 1 AND 128 THEN {bad} "
    if field == "occurred_at":
        return missing + f"WHEN ts_state IS DISTINCT FROM 'ok' THEN {bad} "
    if field == "schema_version":
        return f"WHEN {k} IS NOT NULL AND NOT ({k} = 'I' OR ({k} = 'i' AND {i} >= 1)) THEN {bad} "
    if field == "page":
        return missing + f"WHEN {k} <> 's' THEN {bad} "
    if field == "endpoint":
        return f"WHEN {k} NOT IN ('null', 's') THEN {bad} "
    if field in ("licenses", "overage_allowance"):
        return missing + f"WHEN NOT ({k} = 'i' AND {i} >= 0) THEN {bad} "
    if field == "billing_anchor_day":
        return missing + f"WHEN NOT ({k} = 'i' AND {i} BETWEEN 1 AND 28) THEN {bad} "
    if field == "timezone":
        return missing + f"WHEN {k} <> 's' OR tz_status IS DISTINCT FROM 'ok' THEN {bad} "
    if field == "grace_minutes":
        return f"WHEN {k} IS NOT NULL AND NOT ({k} = 'i' AND {i} >= 0) THEN {bad} "
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
      -- an OverflowError (UTC conversion) or an OSError (a zoneinfo key naming a directory) escapes pydantic's
      -- validators: decode() reports invalid_json whatever the other fields hold
      WHEN ts_state = 'overflow' OR (s_type = 'account.plan_changed' AND tz_status = 'crash') THEN 'invalid_json'
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
      CASE WHEN t_ms IS NOT NULL THEN 'ok' ELSE ts_state END AS ts_state,
      CASE WHEN {is_plan} AND k_timezone = 's' THEN ccm_zone_status(s_timezone) END AS tz_status
    FROM ({with_ts})
  )
)
"""
