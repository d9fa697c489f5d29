"""Who may call what on the worker's HTTP API: bearer tokens, operator or scoped to accounts (docs/security.md).

Every view but /health runs `Access.check` first. Without a valid `Authorization: Bearer <token>` header the answer
is 401; a token scoped to other accounts gets 403 with the same body whether the account exists or not (so a tenant
learns nothing about other tenants); operator-only views (e.g. /metrics) give 403 to scoped tokens. The presented
token's sha256 is compared in constant time with every configured hash. Nothing configured refuses everything with
401, unless `--web-insecure-no-auth` (local development) lets everything through.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processor.web.tokens import TokenEntry, digest, load_tokens

AUTHORIZATION = "Authorization"
CHALLENGE = 'Bearer realm="ccmeter"'
MISSING = "missing bearer token (Authorization: Bearer <token>)"
INVALID = "invalid token"
NOT_YOURS = "this token may not read this account"
OPERATOR_ONLY = "this endpoint needs an operator token"


@dataclass(frozen=True)
class Denial:
    """A refused request: HTTP status, JSON body and headers to answer with."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name (aiohttp's headers already ignore it; plain dicts do not)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def bearer(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive), else None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and " " not in token else None


def unauthorized(reason: str) -> Denial:
    """401 with the Bearer challenge (RFC 6750)."""
    challenge = CHALLENGE if reason == MISSING else CHALLENGE + ', error="invalid_token"'
    return Denial(401, {"error": "unauthorized", "reason": reason}, {"WWW-Authenticate": challenge})


def forbidden(reason: str) -> Denial:
    """403: authenticated, but not for this."""
    return Denial(403, {"error": "forbidden", "reason": reason})


class Access:
    """The configured tokens and the check of each request."""

    def __init__(self, entries: Sequence[TokenEntry], insecure_no_auth: bool = False) -> None:
        self.entries = tuple(entries)
        self.insecure_no_auth = insecure_no_auth

    @classmethod
    def from_config(cls, config: Any) -> Access:
        """From a WorkerConfig (`web_tokens_file`, `web_tokens`, `web_insecure_no_auth`); ValueError with one line
        for a bad tokens file."""
        entries = load_tokens(config.web_tokens_file, config.web_tokens)
        if entries and config.web_insecure_no_auth:
            raise ValueError("--web-insecure-no-auth with tokens configured: choose one")
        return cls(entries, bool(config.web_insecure_no_auth))

    def identify(self, authorization: str | None) -> TokenEntry | None:
        """The configured token presented in an Authorization value, else None (constant time over all hashes)."""
        token = bearer(authorization)
        if token is None:
            return None
        presented = digest(token)
        found = None
        for entry in self.entries:  # no early exit: the time does not tell which hash matched
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        return found

    def check(self, headers: Mapping[str, str], account_id: str | None = None) -> Denial | None:
        """None when the request may go on; else the Denial to answer. `account_id` None: an operator-only view."""
        if self.insecure_no_auth:
            return None
        value = header(headers, AUTHORIZATION)
        if bearer(value) is None:
            return unauthorized(MISSING if not value else INVALID)
        entry = self.identify(value)
        if entry is None:
            return unauthorized(INVALID)
        if account_id is None:
            return None if entry.operator else forbidden(OPERATOR_ONLY)
        return None if entry.may_read(account_id) else forbidden(NOT_YOURS)

    def describe(self) -> str:
        """One line for the startup log."""
        if self.insecure_no_auth:
            return "HTTP API: --web-insecure-no-auth: NO AUTHENTICATION, whoever reaches the port reads every account"
        if not self.entries:
            return (
                "HTTP API: no tokens configured (--web-tokens-file, $CCMETER_WEB_TOKENS): every request except "
                "/health is refused with 401"
            )
        operators = sum(entry.operator for entry in self.entries)
        return f"HTTP API: bearer tokens required: {operators} operator, {len(self.entries) - operators} scoped"
