"""`ccmeter tokens new`: a token once, and the line that configures its hash."""

from __future__ import annotations

import pytest

from processor.cli import main
from processor.web.auth import Access
from processor.web.tokens import PREFIX, parse_line


def test_new_operator_token(capsys: pytest.CaptureFixture[str]):
    assert main(["tokens", "new"]) == 0
    out = capsys.readouterr()
    token, line = out.out.splitlines()
    assert token.startswith(PREFIX) and token not in line
    assert line.endswith(" operator")
    access = Access([parse_line(line)])
    assert access.check({"Authorization": f"Bearer {token}"}, None) is None
    assert "line 2" in out.err


def test_new_scoped_token(capsys: pytest.CaptureFixture[str]):
    assert main(["tokens", "new", "--account-ids", "acct-2,acct-1"]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert line.endswith(" accounts=acct-1,acct-2")
    access = Access([parse_line(line)])
    assert access.check({"Authorization": f"Bearer {token}"}, "acct-1") is None
    assert access.check({"Authorization": f"Bearer {token}"}, "acct-3").status == 403


def test_bad_accounts_and_help(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main(["tokens", "new", "--account-ids", "a b"])
    assert info.value.code == 2
    assert "comma-separated list" in capsys.readouterr().err
    assert main(["tokens"]) == 2
    assert "new" in capsys.readouterr().out


def test_the_old_spelling_still_scopes_the_token_and_warns(capsys: pytest.CaptureFixture[str]):
    assert main(["tokens", "new", "--accounts", "acct-1"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1].endswith(" accounts=acct-1")
    assert "--accounts is deprecated, use --account-ids" in out.err
    with pytest.raises(SystemExit) as info:
        main(["tokens", "new", "--accounts", "a b"])  # checked like the new flag
    assert info.value.code == 2


def test_simulates_count_of_accounts_does_not_scope_tokens(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("CCMETER_ACCOUNTS", "3")  # `simulate --accounts`: a number, not a token's scope
    assert main(["tokens", "new"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(" operator")
