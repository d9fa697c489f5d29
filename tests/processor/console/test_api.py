"""The console's HTTP API against a running `ccmeter console`: every documented path, shapes checked against the
OpenAPI document, 404s, and the same numbers as the CLI on the same snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from processor.console.openapi import dumps, openapi_document
from tests.processor.console.conftest import Console, ccmeter

DOCS_OPENAPI = Path(__file__).parents[3] / "docs" / "openapi.json"
ACCOUNTS = ("acct-0", "acct-1", "acct-2", "acct-3")


def check_shape(body: object, schema_name: str) -> None:
    """`body` matches the document's `components/schemas/<schema_name>`."""
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{schema_name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def cli_report(snapshot: Path, account: str, *args: str) -> str:
    done = ccmeter("report", "--snapshot", str(snapshot), "--account", account, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def report_texts(console_snapshot: Path) -> dict[tuple[str, str], str]:
    """`ccmeter report --snapshot --period current` of every account, JSON and CSV."""
    return {
        (account, fmt): cli_report(console_snapshot, account, "--period", "current", "--format", fmt)
        for account in ACCOUNTS
        for fmt in ("json", "csv")
    }


@pytest.fixture(scope="module")
def reports(report_texts: dict[tuple[str, str], str]) -> dict[str, dict]:
    """The current period's report of every account, as the CLI prints it in JSON."""
    return {account: json.loads(report_texts[account, "json"]) for account in ACCOUNTS}


def test_openapi_document_is_valid_and_checked_in(console: Console) -> None:
    served = console.json("/openapi.json")
    validate(served)
    assert served == openapi_document()
    assert DOCS_OPENAPI.read_text() == dumps(served), "run: python -m processor.console.openapi > docs/openapi.json"


def test_every_documented_path_answers_in_its_documented_shape(console: Console, reports: dict[str, dict]) -> None:
    report = reports["acct-1"]
    day = next(d for d in report["days"] if d["peak_at"] is not None)
    values = {
        "account_id": "acct-1",
        "date": day["date"],
        "at": quote(day["peak_at"]),
        "from": quote("2026-11-02T00:00:00Z"),
        "to": quote("2026-11-03T00:00:00Z"),
    }
    queries = {"changes": "?from={from}&to={to}", "users": "?at={at}", "dead-letters": "?limit=5"}
    answered = set()
    for path, item in openapi_document()["paths"].items():
        url = path.replace("{account_id}", values["account_id"]).replace("{date}", values["date"])
        url += queries.get(path.rsplit("/", 1)[-1], "").format(**values)
        ok = item["get"]["responses"]["200"]["content"]
        status, kind, body = console.get(url)
        assert status == 200, f"GET {url}: {status} {body[:300]!r}\n{console.log()}"
        schema = ok[kind]["schema"]
        if kind == "application/json" and "$ref" in schema:
            check_shape(json.loads(body), schema["$ref"].rsplit("/", 1)[-1])
        answered.add(path)
    assert answered == set(openapi_document()["paths"]) and len(answered) == 8


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/nope/usage",
        "/api/accounts/nope/report?period=current",
        "/api/accounts/nope/changes?from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z",
        "/api/accounts/nope/days/2026-11-02/minutes",
        "/api/accounts/nope/users?at=2026-11-02T10:00:00Z",
        "/api/accounts/nope/dead-letters",
    ],
)
def test_an_unknown_account_is_a_404_with_one_line(console: Console, path: str) -> None:
    body = console.json(path, status=404)
    check_shape(body, "Error")
    assert body["error"] == "account 'nope' not found"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/api/accounts/acct-1/report?period=2026-13", "--period must be"),
        ("/api/accounts/acct-1/report?from=2026-11-02", "both --from and --to"),
        ("/api/accounts/acct-1/report?period=current&format=xml", "format must be json or csv"),
        ("/api/accounts/acct-1/changes?from=yesterday&to=2026-11-03T00:00:00Z", "from must be an RFC 3339 instant"),
        ("/api/accounts/acct-1/changes?from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z", "must be after"),
        ("/api/accounts/acct-1/users", "'at' is required"),
        ("/api/accounts/acct-1/users?at=2030-01-01T00:00:00Z", "is not known yet: data through"),
        ("/api/accounts/acct-1/days/2026-02-30/minutes", "date must be a date"),
        ("/api/accounts/acct-1/dead-letters?limit=0", "limit must be a whole number"),
    ],
)
def test_bad_parameters_are_a_400_with_one_line(console: Console, path: str, words: str) -> None:
    body = console.json(path, status=400)
    assert words in body["error"] and "\n" not in body["error"], body


def test_accounts_overview_equals_the_cli_reports_of_the_current_period(
    console: Console, reports: dict[str, dict]
) -> None:
    body = console.json("/api/accounts")
    check_shape(body["source"], "Source")
    assert body["source"]["name"] == "usage.duckdb"
    assert [row["account_id"] for row in body["accounts"]] == list(ACCOUNTS)
    for row in body["accounts"]:
        report = reports[row["account_id"]]
        assert (row["period_from"], row["period_to"]) == (report["from"], report["to"])
        for key in ("peak_usage", "peak_at", "billable_overage", "over_allowance", "data_through", "complete"):
            assert row[key] == report[key], (row["account_id"], key)
        assert row["licenses"] == report["licenses"] and row["headroom"] == row["licenses"] - row["usage"]
    over = [row["account_id"] for row in body["accounts"] if row["over_allowance"] > 0]
    assert over == ["acct-2"]  # the simulated history's sustained overage


@pytest.mark.parametrize("account", ACCOUNTS)
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_report_is_the_cli_report_byte_for_byte(
    console: Console, report_texts: dict[tuple[str, str], str], account: str, fmt: str
) -> None:
    for query in ("", "period=current&"):  # current is the default
        status, kind, body = console.get(f"/api/accounts/{account}/report?{query}format={fmt}")
        assert status == 200, body
        assert kind == ("application/json" if fmt == "json" else "text/csv")
        assert body.decode() == report_texts[account, fmt]


def test_report_of_a_date_range_is_the_cli_report(console: Console, console_snapshot: Path) -> None:
    span = ("--from", "2026-11-02", "--to", "2026-11-03")
    for fmt in ("json", "csv"):
        status, _, body = console.get(f"/api/accounts/acct-1/report?from=2026-11-02&to=2026-11-03&format={fmt}")
        assert status == 200, body
        assert body.decode() == cli_report(console_snapshot, "acct-1", *span, "--format", fmt)


def test_a_range_the_cli_refuses_is_refused_with_the_cli_words(console: Console, console_snapshot: Path) -> None:
    done = ccmeter("report", "--snapshot", str(console_snapshot), "--account", "acct-2", "--period", "previous")
    assert done.returncode != 0
    body = console.json("/api/accounts/acct-2/report?period=previous", status=400)
    assert body["error"] in done.stderr


def test_usage_now_is_the_last_known_instant(console: Console, reports: dict[str, dict]) -> None:
    for account in ACCOUNTS:
        usage = console.json(f"/api/accounts/{account}/usage")
        report = reports[account]
        assert usage["as_of"] == usage["data_through"] == report["data_through"]
        last_day = next(d for d in report["days"] if d["date"] == usage["today"])
        assert (usage["today_peak"], usage["today_peak_at"]) == (last_day["peak_usage"], last_day["peak_at"])
        assert usage["licenses"] == report["licenses"] and usage["headroom"] == usage["licenses"] - usage["usage"]
        minutes = console.json(f"/api/accounts/{account}/days/{usage['today']}/minutes")
        assert minutes["max_usage"][-1] >= usage["usage"]
        plan = usage["plan"]
        assert f"{plan['grace_minutes']} minutes" in usage["billable_rule"]
        assert ("in total" in usage["billable_rule"]) == (plan["grace_mode"] == "cumulative")


def test_changes_are_the_cli_timeline_cut_at_data_through(console: Console, console_snapshot: Path) -> None:
    done = ccmeter("timeline", "--snapshot", str(console_snapshot), "--account", "acct-1", "--format", "json")
    assert done.returncode == 0, done.stderr
    timeline = json.loads(done.stdout)["changes"]
    start, end = "2026-11-02T06:00:00.000Z", "2026-11-04T00:00:00.000Z"
    body = console.json(f"/api/accounts/acct-1/changes?from={start}&to={end}")
    through = body["data_through"]
    expected = [
        {k: c[k] for k in ("at", "usage", "licenses", "change_id")} for c in timeline if start <= c["at"] < through
    ]
    assert body["changes"] == expected and expected
    assert body["known_until"] == through < end
    before = [c for c in timeline if c["at"] <= start]
    assert body["start_usage"] == (before[-1]["usage"] if before else 0)


def test_minutes_peak_and_users_at_the_peak_equal_the_report(console: Console, reports: dict[str, dict]) -> None:
    for account in ACCOUNTS:
        report = reports[account]
        for day in report["days"]:
            if day["peak_usage"] is None:
                continue
            minutes = console.json(f"/api/accounts/{account}/days/{day['date']}/minutes")
            assert max(minutes["max_usage"]) == day["peak_usage"], (account, day["date"])
            assert len(minutes["max_usage"]) == (minutes["minutes"] if day["complete"] else len(minutes["licenses"]))
            assert minutes["licenses"][-1] == day["licenses"] or not day["complete"]
        if report["peak_at"] is not None:
            who = console.json(f"/api/accounts/{account}/users?at={quote(report['peak_at'])}")
            assert who["users"] == report["peak_users"] and who["usage"] == report["peak_usage"]


def test_dead_letters_are_the_cli_dead_letters(console: Console, console_snapshot: Path) -> None:
    done = ccmeter("deadletters", "--snapshot", str(console_snapshot), "--account", "acct-1", "--format", "json")
    assert done.returncode == 0, done.stderr
    letters = json.loads(done.stdout)
    assert len(letters) > 5
    body = console.json("/api/accounts/acct-1/dead-letters?limit=5")
    assert body["total"] == len(letters) and body["letters"] == letters[-5:]
    everything = console.json("/api/accounts/acct-1/dead-letters?limit=1000")
    assert everything["letters"] == letters
