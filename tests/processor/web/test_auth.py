"""The check every view but /health runs: 401 without a valid token, 403 outside the token's scope."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from processor.web.auth import INVALID, MISSING, NOT_YOURS, OPERATOR_ONLY, Access, Denial, bearer
from processor.web.tokens import new_token, parse_line, token_line

OPERATOR = new_token()
TENANT = new_token()
ACCESS = Access([parse_line(token_line(OPERATOR)), parse_line(token_line(TENANT, ["acct-1", "acct-2"]))])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_bearer_header_parsing():
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer   abc  ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer") is None
    assert bearer("Bearer a b") is None
    assert bearer(None) is None and bearer("") is None


def test_missing_or_wrong_token_is_401_with_a_challenge():
    missing = ACCESS.check({}, "acct-1")
    assert missing is not None and missing.status == 401 and missing.body["reason"] == MISSING
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="ccmeter"'
    for headers in (auth(new_token()), auth(OPERATOR + "x"), {"Authorization": OPERATOR}, {"Authorization": "x"}):
        wrong = ACCESS.check(headers, "acct-1")
        assert wrong is not None and wrong.status == 401 and wrong.body["reason"] == INVALID, headers
        assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert ACCESS.check({}, None) == missing  # operator-only views too


def test_header_name_is_case_insensitive():
    assert ACCESS.check({"authorization": f"Bearer {OPERATOR}"}, "acct-9") is None


def test_operator_token_reads_every_account_and_operator_views():
    assert ACCESS.check(auth(OPERATOR), "acct-1") is None
    assert ACCESS.check(auth(OPERATOR), "no-such-account") is None
    assert ACCESS.check(auth(OPERATOR), None) is None


def test_scoped_token_reads_its_accounts_only_and_403_says_nothing_about_existence():
    assert ACCESS.check(auth(TENANT), "acct-1") is None
    assert ACCESS.check(auth(TENANT), "acct-2") is None
    other = ACCESS.check(auth(TENANT), "acct-3")
    absent = ACCESS.check(auth(TENANT), "no-such-account")
    assert other == absent == Denial(403, {"error": "forbidden", "reason": NOT_YOURS})
    assert ACCESS.check(auth(TENANT), None) == Denial(403, {"error": "forbidden", "reason": OPERATOR_ONLY})
    assert ACCESS.check(auth(TENANT), "ACCT-1") is not None  # ids are exact


def test_no_tokens_refuses_everything_unless_insecure():
    empty = Access([])
    assert empty.check({}, "a") is not None and empty.check({}, "a").status == 401
    assert empty.check(auth(OPERATOR), "a").status == 401
    assert "refused with 401" in empty.describe()
    insecure = Access([], insecure_no_auth=True)
    assert insecure.check({}, "a") is None and insecure.check({}, None) is None
    assert "NO AUTHENTICATION" in insecure.describe()
    assert ACCESS.describe() == "HTTP API: bearer tokens required: 1 operator, 1 scoped"


def test_identify_finds_the_matching_entry():
    assert ACCESS.identify(f"Bearer {TENANT}").accounts == {"acct-1", "acct-2"}
    assert ACCESS.identify(f"Bearer {OPERATOR}").operator
    assert ACCESS.identify("Bearer nope") is None


def test_from_config(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(token_line(OPERATOR) + "\n")
    config = SimpleNamespace(
        web_tokens_file=str(path), web_tokens=token_line(TENANT, ["a"]), web_insecure_no_auth=False
    )
    access = Access.from_config(config)
    assert access.check(auth(OPERATOR), None) is None and access.check(auth(TENANT), "a") is None
    with pytest.raises(ValueError, match="choose one"):
        Access.from_config(SimpleNamespace(web_tokens_file=str(path), web_tokens=None, web_insecure_no_auth=True))
