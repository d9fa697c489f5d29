"""`ccmeter tokens new`: a new random API token for the worker's HTTP API, and its line for the tokens file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from processor.options import deprecated
from processor.web.tokens import new_token, parse_accounts, token_line


def _accounts(text: str) -> list[str]:
    try:
        return parse_accounts(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(subparsers: Any) -> None:
    """Add the `tokens` command with its `new` subcommand."""
    tokens = subparsers.add_parser(
        "tokens",
        help="API tokens of the worker's HTTP API",
        description="Manage bearer tokens of the worker's HTTP API (docs/security.md, 'HTTP API access').",
    )
    sub = tokens.add_subparsers(dest="tokens_command", metavar="SUBCOMMAND")
    new = sub.add_parser(
        "new",
        help="print a new random token and the line that configures it",
        description="Print a new random token (stdout, line 1: shown only this once, the worker keeps only its hash) "
        "and the line to add to --web-tokens-file or $CCMETER_WEB_TOKENS (stdout, line 2). Without --account-ids the "
        "token is an operator token: every account, and operator endpoints such as /metrics.",
        epilog="Example: ccmeter tokens new --account-ids acct-1,acct-2 >> new-token.txt",
    )
    account_ids = new.add_argument(
        "--account-ids",
        type=_accounts,
        default=None,
        metavar="A,B",
        help="scope the token to these account ids (comma-separated; was --accounts, which is `simulate`'s number "
        "of accounts); default: an operator token",
    )
    deprecated(new, "--accounts", account_ids)
    new.set_defaults(func=run_new)
    tokens.set_defaults(func=lambda args: tokens.print_help() or 2)


def run_new(args: argparse.Namespace) -> int:
    """Print a token and its configuration line."""
    token = new_token()
    print(token)
    print(token_line(token, args.account_ids or ()))
    print(
        "ccmeter tokens: line 1 is the token (give it to the client; it is not stored anywhere), line 2 goes into "
        "--web-tokens-file on every worker (then restart them)",
        file=sys.stderr,
    )
    return 0
