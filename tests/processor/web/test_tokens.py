"""API tokens: generation, hashes, configuration lines, the tokens file and the inline variable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from processor.web.tokens import (
    PREFIX,
    TokenEntry,
    digest,
    load_tokens,
    new_token,
    parse_line,
    parse_tokens,
    token_line,
)

HEX = "ab" * 32


def test_new_tokens_are_random_prefixed_and_long():
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(t.startswith(PREFIX) and len(t) >= len(PREFIX) + 43 for t in tokens)


def test_digest_is_sha256_of_the_token():
    assert digest("ccm_x") == hashlib.sha256(b"ccm_x").digest()


def test_token_line_round_trips_through_parse_line():
    token = new_token()
    operator = parse_line(token_line(token))
    assert operator == TokenEntry(digest(token), operator=True)
    scoped = parse_line(token_line(token, ["acct-2", "acct-1", "acct-2"]))
    assert scoped == TokenEntry(digest(token), operator=False, accounts=frozenset({"acct-1", "acct-2"}))
    assert token_line(token, ["b", "a"]).endswith(" accounts=a,b")


def test_scope_of_an_entry():
    scoped = TokenEntry(b"x", operator=False, accounts=frozenset({"acct-1"}))
    assert scoped.may_read("acct-1") and not scoped.may_read("acct-2") and not scoped.may_read("")
    assert TokenEntry(b"x", operator=True).may_read("anything")


def test_comments_blank_lines_and_case_of_the_hex():
    text = f"# tokens of the API\n\nsha256:{HEX.upper()} operator   # ops team\n  sha256:{'cd' * 32} accounts=a,b\n"
    entries = parse_tokens(text, "f")
    assert [e.operator for e in entries] == [True, False]
    assert entries[0].digest == bytes.fromhex(HEX) and entries[1].accounts == {"a", "b"}


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("ccm_secretsecretsecret operator", "not sha256:<64 hex digits>"),
        (f"sha256:{HEX[:-2]} operator", "not sha256:<64 hex digits>"),
        (f"md5:{HEX} operator", "not sha256:<64 hex digits>"),
        (f"sha256:{HEX}", "expected `sha256:"),
        (f"sha256:{HEX} admin", "the scope"),
        (f"sha256:{HEX} accounts=", "not a comma-separated list"),
        (f"sha256:{HEX} accounts=a,,b", "not a comma-separated list"),
        (f"sha256:{HEX} operator extra", "expected `sha256:"),
    ],
)
def test_bad_lines_say_which_line_and_why(line: str, why: str):
    with pytest.raises(ValueError, match="tokens.txt, line 2: ") as info:
        parse_tokens(f"# ok\n{line}\n", "tokens.txt")
    assert why in str(info.value)
    assert "secret" not in str(info.value)  # a token pasted by mistake is not echoed


def test_load_from_file_and_inline(tmp_path: Path):
    path = tmp_path / "tokens.txt"
    path.write_text(f"sha256:{HEX} operator\n")
    inline = f"sha256:{'01' * 32} accounts=a;sha256:{'02' * 32} accounts=b,c"
    entries = load_tokens(str(path), inline)
    assert [sorted(e.accounts) for e in entries] == [[], ["a"], ["b", "c"]]
    assert load_tokens(None, None) == []
    assert len(load_tokens(None, inline)) == 2


def test_unreadable_file_and_duplicates_are_one_line_errors(tmp_path: Path):
    with pytest.raises(ValueError, match=r"--web-tokens-file .*missing.txt: cannot read it"):
        load_tokens(str(tmp_path / "missing.txt"), None)
    path = tmp_path / "tokens.txt"
    path.write_text(f"sha256:{HEX} operator\n")
    with pytest.raises(ValueError, match="configured twice"):
        load_tokens(str(path), f"sha256:{HEX} accounts=a")
    with pytest.raises(ValueError, match=r"CCMETER_WEB_TOKENS, line 2"):
        load_tokens(None, f"sha256:{'01' * 32} operator;nonsense")
