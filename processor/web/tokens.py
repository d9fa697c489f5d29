"""API tokens of the worker's HTTP API: new random tokens, their sha256 hashes, and the configured token lines.

A token line is `sha256:<64 hex digits> operator` (every account, and operator endpoints such as /metrics) or
`sha256:<64 hex digits> accounts=acct-1,acct-2` (only these accounts). `#` starts a comment; blank lines are
ignored. Only hashes are configured: a token is a 256-bit random string, so a plain sha256 cannot be reversed
(the usual scheme for API keys), and a leaked tokens file gives no access.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PREFIX = "ccm_"  # makes tokens recognisable (secret scanners, logs)
_HASH = re.compile(r"sha256:([0-9a-fA-F]{64})")
_ACCOUNT = re.compile(r"[^\s,#]+")


@dataclass(frozen=True)
class TokenEntry:
    """One configured token: its sha256 digest and what it may read (`accounts` is empty for an operator)."""

    digest: bytes
    operator: bool
    accounts: frozenset[str] = frozenset()

    def may_read(self, account_id: str) -> bool:
        """Whether this token may read the account."""
        return self.operator or account_id in self.accounts


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """The sha256 digest of a token as presented."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_line(token: str, accounts: Iterable[str] = ()) -> str:
    """The configuration line of a token: operator without accounts, else scoped to them."""
    names = sorted(set(accounts))
    scope = f"accounts={','.join(names)}" if names else "operator"
    return f"sha256:{digest(token).hex()} {scope}"


def parse_accounts(text: str) -> list[str]:
    """`a,b` -> ["a", "b"]; ValueError for an empty list or a name with spaces, commas or `#`."""
    names = [name.strip() for name in text.split(",")]
    bad = [name for name in names if not _ACCOUNT.fullmatch(name)]
    if bad or not names:
        raise ValueError(f"{text!r} is not a comma-separated list of account ids (no spaces or '#' in them)")
    return names


def parse_line(line: str) -> TokenEntry | None:
    """One line of configuration (None for a blank or comment line); ValueError saying what is wrong."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2:
        raise ValueError("expected `sha256:<64 hex digits> operator` or `sha256:<64 hex digits> accounts=a,b`")
    found = _HASH.fullmatch(parts[0])
    if not found:
        # never echo the field: it may be a token pasted by mistake
        raise ValueError("the first field is not sha256:<64 hex digits> (configure hashes, not tokens)")
    raw = bytes.fromhex(found.group(1))
    if parts[1] == "operator":
        return TokenEntry(raw, operator=True)
    if parts[1].startswith("accounts="):
        return TokenEntry(raw, operator=False, accounts=frozenset(parse_accounts(parts[1].removeprefix("accounts="))))
    raise ValueError("the scope (second field) is `operator` or `accounts=a,b`")


def parse_tokens(text: str, source: str, separator: str = "\n") -> list[TokenEntry]:
    """Every token of a configuration text; ValueError naming `source` and the line at fault."""
    entries = []
    for number, line in enumerate(text.split(separator), start=1):
        try:
            entry = parse_line(line)
        except ValueError as exc:
            raise ValueError(f"{source}, line {number}: {exc}") from None
        if entry is not None:
            entries.append(entry)
    return entries


def load_tokens(path: str | None, inline: str | None) -> list[TokenEntry]:
    """Tokens of the tokens file (if any) and of the inline lines (`;` or newline separated, if any)."""
    entries: list[TokenEntry] = []
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--web-tokens-file {path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
        entries += parse_tokens(text, f"--web-tokens-file {path}")
    if inline:
        entries += parse_tokens(inline.replace(";", "\n"), "--web-tokens / $CCMETER_WEB_TOKENS")
    seen: set[bytes] = set()
    for entry in entries:
        if entry.digest in seen:
            raise ValueError(f"the token sha256:{entry.digest.hex()[:12]}... is configured twice")
        seen.add(entry.digest)
    return entries
