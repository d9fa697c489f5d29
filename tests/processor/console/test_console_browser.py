"""The web console in headless Chromium (Debian's package, `make browser`; driven by Playwright): what the pages show
equals `ccmeter report --snapshot` on the same snapshot, at desktop and phone width, with the keyboard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.processor.console.conftest import Console, ccmeter

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
ACCOUNTS = ("acct-0", "acct-1", "acct-2", "acct-3")


def cli_report(snapshot: Path, account: str, fmt: str = "json", period: str = "current") -> str:
    done = ccmeter("report", "--snapshot", str(snapshot), "--account", account, "--period", period, "--format", fmt)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def reports(console_snapshot: Path) -> dict[str, dict]:
    return {account: json.loads(cli_report(console_snapshot, account)) for account in ACCOUNTS}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console", lambda msg: errors.append(msg.text) if msg.type == "error" and "resource" not in msg.text else None
    )
    # Every request answers, but for the unknown account of test_unknown_account_says_so.
    page.on(
        "response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 and "/nope" not in r.url else None
    )
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}\n{console.log()}"


def open_view(page: Page, console: Console, hash_path: str) -> None:
    page.goto(f"{console.url.rstrip('/')}/{hash_path}")
    page.wait_for_selector("main[data-ready=true]")


def cell(page: Page, account: str, css: str) -> str:
    return page.locator(f'tr[data-account="{account}"] {css}').inner_text().strip()


def test_accounts_overview_shows_the_cli_numbers_sorts_and_filters(
    page: Page, console: Console, reports: dict[str, dict], tmp_path: Path
) -> None:
    open_view(page, console, "#/")
    rows = page.locator("#accounts-table tbody tr")
    assert rows.count() == len(ACCOUNTS), console.log()
    for account, report in reports.items():
        assert cell(page, account, "td.peak") == str(report["peak_usage"])
        assert cell(page, account, "td.billable") == str(report["billable_overage"])
        assert cell(page, account, "td.over-allowance") == str(report["over_allowance"])
        over = report["over_allowance"] > 0
        assert ("over-allowance" in (rows.filter(has_text=account).get_attribute("class") or "")) == over
    assert "over allowance" in cell(page, "acct-2", "th")
    page.screenshot(path=str(tmp_path / "accounts.png"), full_page=True)

    # Sort by billable overage with the keyboard: Enter on the header button, twice for descending.
    button = page.locator('th button[data-key="billable_overage"]')
    button.focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    assert page.locator('th[aria-sort="descending"]').inner_text().startswith("Billable overage")
    assert rows.first.get_attribute("data-account") == "acct-2"

    # Filter by name through its label.
    page.get_by_label("Filter by account").fill("acct-1")
    assert rows.count() == 1 and rows.first.get_attribute("data-account") == "acct-1"
    assert page.locator("#accounts-count").inner_text() == "1 of 4 accounts"

    # Follow the link with the keyboard.
    rows.first.locator("a").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#period-chart")
    assert page.locator("h1").inner_text() == "acct-1"


def test_account_page_shows_the_cli_report_day_drill_down_and_exports(
    page: Page, console: Console, console_snapshot: Path, reports: dict[str, dict], tmp_path: Path
) -> None:
    report = reports["acct-2"]
    usage = console.json("/api/accounts/acct-2/usage")
    open_view(page, console, "#/accounts/acct-2")
    page.wait_for_selector("#day-chart")
    assert page.locator("#usage-now").inner_text() == str(usage["usage"])
    assert page.locator("#today-peak").inner_text() == str(usage["today_peak"])
    assert page.locator("#period-peak").inner_text() == str(report["peak_usage"])
    assert page.locator("#billable-overage").inner_text() == str(report["billable_overage"])
    assert page.locator("#over-allowance").inner_text() == str(report["over_allowance"])
    assert page.locator("#distinct-users").inner_text() == str(report["distinct_users"])
    assert abs(float(page.locator("#license-hours").inner_text().replace(",", "")) - report["license_hours"]) <= 0.05
    assert page.locator("#billable-rule").inner_text() == usage["billable_rule"]
    peak_users = page.locator("#peak-users li").evaluate_all("items => items.map(li => li.dataset.user)")
    assert peak_users == [user["user_id"] for user in report["peak_users"]]
    # The chart: one bar per known day, the data_through marker, licenses and licenses + allowance.
    known = [day for day in report["days"] if day["peak_usage"] is not None]
    assert page.locator("#period-chart .bar-day").count() == len(known)
    assert page.locator("#period-chart .through-line").count() == 1
    assert page.locator("#period-chart .licenses-line").count() == 1
    assert page.locator("#period-chart .allowance-line").count() == 1
    page.screenshot(path=str(tmp_path / "account.png"), full_page=True)

    # Day drill-down with the keyboard: focus the bar of the period's peak day, press Enter.
    peak_day = max(known, key=lambda day: day["peak_usage"])
    page.locator(f'#period-chart .bar-day[data-date="{peak_day["date"]}"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "day => document.querySelector('#day-title')?.textContent === 'Day ' + day", arg=peak_day["date"]
    )
    page.wait_for_selector("#day-chart")
    assert page.locator("#day-peak").inner_text() == str(peak_day["peak_usage"])
    who = console.json(f"/api/accounts/acct-2/users?at={peak_day['peak_at']}")
    shown = page.locator("#day-peak-users li").evaluate_all("items => items.map(li => li.dataset.user)")
    assert shown == [user["user_id"] for user in who["users"]] and len(shown) == peak_day["peak_usage"]
    assert page.get_by_label("Day", exact=True).input_value() == peak_day["date"]

    # Exports: the same bytes as the CLI.
    for fmt in ("csv", "json"):
        with page.expect_download() as download:
            page.locator(f"#export-{fmt}").click()
        saved = tmp_path / f"export.{fmt}"
        download.value.save_as(saved)
        assert saved.read_text() == cli_report(console_snapshot, "acct-2", fmt)

    # Dead letters: the last ones, as many as the API says.
    letters = console.json("/api/accounts/acct-2/dead-letters?limit=10")
    assert page.locator("#letters-table tbody tr").count() == len(letters["letters"]) > 0
    assert str(letters["total"]) in page.locator("#letters-count").inner_text()


def test_phone_width_has_no_page_wide_scroll(page: Page, console: Console, tmp_path: Path) -> None:
    page.set_viewport_size(PHONE)
    for hash_path, ready in (("#/", "#accounts-table"), ("#/accounts/acct-1", "#day-chart")):
        open_view(page, console, hash_path)
        page.wait_for_selector(ready)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{hash_path}: the page is {width}px wide on a {PHONE['width']}px screen"
        page.screenshot(path=str(tmp_path / f"phone-{hash_path.strip('#/').replace('/', '-') or 'accounts'}.png"))


def test_unknown_account_says_so(page: Page, console: Console) -> None:
    open_view(page, console, "#/accounts/nope")
    assert page.get_by_role("alert").inner_text() == "account 'nope' not found"
