"""How every ccmeter command connects to Kafka: TLS and SASL settings, from flags and `CCMETER_*` variables.

`KafkaSecurity` is built once per command (`security_from_args`, in processor/cli) and made the active one for
the command's run (`use_security`); every client construction site asks for it: `client_kwargs()` for aiokafka
clients, `current_security().faust_credentials()` for the worker's Faust app, `child_env()` for the worker that
`replay run` starts. With nothing active, clients connect in PLAINTEXT exactly as before. Secrets (the SASL
password, the key password) come only from a file or an environment variable, never from a flag value, and never
appear in `repr`, `--help`, logs or error messages.

`access_error` turns the client errors of a refused connection (wrong password, missing ACL, untrusted
certificate) into one line; `check_access` finds those at startup, where aiokafka would only report "Unable to
bootstrap", and `check_group_access` a refused consumer group, whose join aiokafka retries forever.
docs/security.md has the settings table and the ACLs each component needs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SecurityConfigError(ValueError):
    """A security setting is missing, contradictory or unreadable (one line, never holding a secret)."""


class KafkaAccessError(Exception):
    """The broker refused this client: authentication, authorization or TLS failed (one line)."""


@dataclass(frozen=True)
class Setting:
    """One security setting: attribute, flag, environment variable and help (docs/security.md's table)."""

    name: str
    flag: str
    env: str
    help: str
    metavar: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "protocol",
        "--security-protocol",
        "CCMETER_SECURITY_PROTOCOL",
        "PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL",
        "PROTOCOL",
    ),
    Setting(
        "cafile",
        "--ssl-cafile",
        "CCMETER_SSL_CAFILE",
        "CA certificates (PEM) that signed the broker's certificate (default: the system's)",
        "FILE",
    ),
    Setting("certfile", "--ssl-certfile", "CCMETER_SSL_CERTFILE", "client certificate (PEM) for mutual TLS", "FILE"),
    Setting("keyfile", "--ssl-keyfile", "CCMETER_SSL_KEYFILE", "private key of --ssl-certfile (PEM)", "FILE"),
    Setting(
        "key_password_file",
        "--ssl-key-password-file",
        "CCMETER_SSL_KEY_PASSWORD_FILE",
        "file holding the password of an encrypted --ssl-keyfile (or $CCMETER_SSL_KEY_PASSWORD)",
        "FILE",
    ),
    Setting(
        "check_hostname",
        "--ssl-no-check-hostname",
        "CCMETER_SSL_CHECK_HOSTNAME",
        "do not check that the broker's certificate names its host; the chain is still verified "
        "($CCMETER_SSL_CHECK_HOSTNAME=false)",
    ),
    Setting(
        "mechanism",
        "--sasl-mechanism",
        "CCMETER_SASL_MECHANISM",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (needs a SASL_* protocol)",
        "MECHANISM",
    ),
    Setting("username", "--sasl-username", "CCMETER_SASL_USERNAME", "SASL user name", "USER"),
    Setting(
        "password_file",
        "--sasl-password-file",
        "CCMETER_SASL_PASSWORD_FILE",
        "file holding the SASL password (or $CCMETER_SASL_PASSWORD; never a flag value)",
        "FILE",
    ),
)
PASSWORD_ENV = "CCMETER_SASL_PASSWORD"
KEY_PASSWORD_ENV = "CCMETER_SSL_KEY_PASSWORD"
_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class KafkaSecurity:
    """Validated connection security of one command; `KafkaSecurity()` is plain PLAINTEXT."""

    protocol: str = "PLAINTEXT"
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    key_password_file: str | None = None
    check_hostname: bool = True
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None  # where `password` came from (passed on to child processes instead of it)

    def __post_init__(self) -> None:
        _validate(self)

    def __repr__(self) -> str:
        shown = [f"protocol={self.protocol!r}"]
        for name in ("cafile", "certfile", "keyfile", "mechanism", "username"):
            value = getattr(self, name)
            if value is not None:
                shown.append(f"{name}={value!r}")
        if not self.check_hostname:
            shown.append("check_hostname=False")
        if self.password is not None:
            shown.append("password=<hidden>")
        return f"KafkaSecurity({', '.join(shown)})"

    __str__ = __repr__

    @property
    def uses_ssl(self) -> bool:
        """Whether connections are TLS."""
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        """Whether connections authenticate with SASL."""
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (None without TLS); SecurityConfigError if a file cannot be loaded."""
        if not self.uses_ssl:
            return None
        from aiokafka.helpers import create_ssl_context

        key_password = self.key_password
        try:
            context = create_ssl_context(
                cafile=self.cafile,
                certfile=self.certfile,
                keyfile=self.keyfile,
                # Never let OpenSSL prompt on the terminal for the password of an encrypted key.
                password=key_password if key_password is not None else (lambda: b""),
            )
        except ssl.SSLError as exc:
            raise SecurityConfigError(f"cannot load the TLS files ({_tls_files(self)}): {exc.reason or exc}") from None
        except OSError as exc:
            raise SecurityConfigError(f"cannot read the TLS files ({_tls_files(self)}): {exc.strerror}") from None
        context.check_hostname = self.check_hostname
        return context

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `AIOKafkaProducer`/`AIOKafkaConsumer`/`AIOKafkaAdminClient`."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs

    def faust_credentials(self) -> Any:
        """`broker_credentials` for `faust.App` (None for PLAINTEXT)."""
        import faust

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context(),
                mechanism=self.mechanism,
            )
        if self.uses_ssl:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def child_env(self) -> dict[str, str]:
        """`CCMETER_*` variables that give a child process these settings (the password by its file when it
        came from one, else in `CCMETER_SASL_PASSWORD`: never on a command line)."""
        env = {"CCMETER_SECURITY_PROTOCOL": self.protocol}
        for name in ("cafile", "certfile", "keyfile", "mechanism", "username", "password_file", "key_password_file"):
            value = getattr(self, name)
            if value is not None:
                env[_BY_NAME[name].env] = value
        if not self.check_hostname:
            env["CCMETER_SSL_CHECK_HOSTNAME"] = "false"
        if self.password is not None and self.password_file is None:
            env[PASSWORD_ENV] = self.password
        if self.key_password is not None and self.key_password_file is None:
            env[KEY_PASSWORD_ENV] = self.key_password
        return env

    def describe(self) -> str:
        """A short description for log lines, e.g. `SASL_SSL (SCRAM-SHA-512 as ccmeter-worker)`."""
        if self.uses_sasl:
            return f"{self.protocol} ({self.mechanism} as {self.username})"
        return self.protocol


def _tls_files(security: KafkaSecurity) -> str:
    files = [f for f in (security.cafile, security.certfile, security.keyfile) if f]
    return ", ".join(files) or "system CA certificates"


def _validate(s: KafkaSecurity) -> None:
    if s.protocol not in PROTOCOLS:
        raise SecurityConfigError(f"--security-protocol {s.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    for name in ("cafile", "certfile", "keyfile"):
        path = getattr(s, name)
        if path is None:
            continue
        if not s.uses_ssl:
            raise SecurityConfigError(f"{_BY_NAME[name].flag} needs --security-protocol SSL or SASL_SSL")
        if not Path(path).is_file():
            raise SecurityConfigError(f"{_BY_NAME[name].flag} {path}: no such file")
    if s.keyfile and not s.certfile:
        raise SecurityConfigError("--ssl-keyfile needs --ssl-certfile")
    if s.key_password is not None and not s.keyfile:
        raise SecurityConfigError("a key password needs --ssl-keyfile")
    if not s.check_hostname and not s.uses_ssl:
        raise SecurityConfigError("--ssl-no-check-hostname needs --security-protocol SSL or SASL_SSL")
    if not s.uses_sasl:
        for name in ("mechanism", "username"):
            if getattr(s, name) is not None:
                raise SecurityConfigError(f"{_BY_NAME[name].flag} needs --security-protocol SASL_PLAINTEXT or SASL_SSL")
        if s.password is not None:
            raise SecurityConfigError("a SASL password needs --security-protocol SASL_PLAINTEXT or SASL_SSL")
        return
    if s.mechanism not in MECHANISMS:
        what = "is missing" if s.mechanism is None else f"{s.mechanism!r} is not supported"
        raise SecurityConfigError(f"--sasl-mechanism {what}: expected one of {', '.join(MECHANISMS)}")
    if not s.username:
        raise SecurityConfigError(f"--sasl-mechanism {s.mechanism} needs --sasl-username")
    if not s.password:
        raise SecurityConfigError(
            f"--sasl-username {s.username} needs a password: --sasl-password-file FILE or ${PASSWORD_ENV}"
        )


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """Add the Kafka security flags to a command's parser (defaults None: environment variables fill in)."""
    group = parser.add_argument_group(
        "Kafka security",
        "TLS and SASL for the broker connection; each flag can also be set by its environment variable. "
        f"Passwords are read from files or ${PASSWORD_ENV} / ${KEY_PASSWORD_ENV}, never from a flag value.",
    )
    for setting in SETTINGS:
        dest = "kafka_" + setting.name
        if setting.name == "check_hostname":
            group.add_argument(
                setting.flag, dest=dest, action="store_const", const=False, default=None, help=setting.help
            )
            continue
        group.add_argument(
            setting.flag, dest=dest, default=None, metavar=setting.metavar, help=f"{setting.help} (${setting.env})"
        )


def security_from_args(args: argparse.Namespace | None, env: Mapping[str, str] | None = None) -> KafkaSecurity:
    """The settings of `add_security_options` flags, then `CCMETER_*` variables of `env` (default: os.environ)."""
    env = os.environ if env is None else env
    given = {s.name: getattr(args, "kafka_" + s.name, None) if args is not None else None for s in SETTINGS}
    return security_from_mapping(given, env)


def security_from_mapping(given: Mapping[str, Any], env: Mapping[str, str]) -> KafkaSecurity:
    """Values given (None = not given) win over `CCMETER_*` variables of `env`."""

    def pick(name: str) -> Any:
        value = given.get(name)
        if value is None:
            value = env.get(_BY_NAME[name].env) or None
        return value

    protocol = str(pick("protocol") or "PLAINTEXT").upper()
    mechanism = pick("mechanism")
    check = given.get("check_hostname")
    if check is None:
        check = _boolean(env.get("CCMETER_SSL_CHECK_HOSTNAME"), "CCMETER_SSL_CHECK_HOSTNAME")
    password_file, key_password_file = pick("password_file"), pick("key_password_file")
    return KafkaSecurity(
        protocol=protocol,
        cafile=pick("cafile"),
        certfile=pick("certfile"),
        keyfile=pick("keyfile"),
        key_password=_secret(key_password_file, env.get(KEY_PASSWORD_ENV), "--ssl-key-password-file"),
        key_password_file=key_password_file,
        check_hostname=check,
        mechanism=str(mechanism).upper() if mechanism else None,
        username=pick("username"),
        password=_secret(password_file, env.get(PASSWORD_ENV), "--sasl-password-file"),
        password_file=password_file,
    )


def _boolean(text: str | None, name: str) -> bool:
    if text is None or text.strip() == "" or text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise SecurityConfigError(f"${name}: expected true or false")


def _secret(path: str | None, from_env: str | None, flag: str) -> str | None:
    """A secret from its file (first line, without the line end), else from its environment variable."""
    if path is None:
        return from_env or None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not readable as UTF-8 text"
        raise SecurityConfigError(f"{flag} {path}: cannot read it ({reason})") from None
    secret = text.splitlines()[0] if text.strip() else ""
    if not secret:
        raise SecurityConfigError(f"{flag} {path}: the file is empty")
    return secret


# -- the active settings ------------------------------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[KafkaSecurity] = contextvars.ContextVar("ccmeter_kafka_security")
_PLAINTEXT = KafkaSecurity()


def current_security() -> KafkaSecurity:
    """The security of the running command (PLAINTEXT when none was set)."""
    return _ACTIVE.get(_PLAINTEXT)


@contextlib.contextmanager
def use_security(security: KafkaSecurity) -> Iterator[KafkaSecurity]:
    """Make `security` the active settings inside the block (tasks and threads started inside inherit them)."""
    token = _ACTIVE.set(security)
    try:
        yield security
    finally:
        _ACTIVE.reset(token)


def client_kwargs(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments of `security`, else of the active settings ({} for PLAINTEXT)."""
    security = security or current_security()
    return {} if security.protocol == "PLAINTEXT" else security.aiokafka_kwargs()


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ccmeter process: `base` (default os.environ) plus the active settings."""
    env = dict(os.environ if base is None else base)
    security = current_security()
    if security.protocol != "PLAINTEXT":
        env.update(security.child_env())
    return env


def plaintext_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) without any Kafka security variable (children talking to a local PLAINTEXT
    broker, like the demo's)."""
    names = {s.env for s in SETTINGS} | {PASSWORD_ENV, KEY_PASSWORD_ENV}
    return {k: v for k, v in (os.environ if base is None else base).items() if k not in names}


def broker_of_args(args: argparse.Namespace) -> str:
    """The bootstrap servers a command talks to (its --broker, $CCMETER_BROKER, the default)."""
    return getattr(args, "broker", None) or os.environ.get("CCMETER_BROKER") or "127.0.0.1:9092"


def takes_security(args: argparse.Namespace) -> bool:
    """Whether the command's parser has the security options (it talks to Kafka)."""
    return hasattr(args, "kafka_protocol")


# -- refused connections -------------------------------------------------------------------------------------------


def access_error(exc: BaseException, broker: str, security: KafkaSecurity | None = None) -> str | None:
    """One line explaining `exc` (or an exception it wraps) if it means the broker refused this client, else None.
    Never holds a secret."""
    from aiokafka import errors as e

    security = security or KafkaSecurity()
    for cause in _chain(exc):
        if isinstance(cause, e.SaslAuthenticationFailed | e.AuthenticationFailedError | e.IllegalSaslStateError):
            who = f"user {security.username!r} ({security.mechanism})" if security.username else "this client"
            return f"authentication failed at {broker} for {who}: wrong user name or password"
        if isinstance(cause, e.UnsupportedSaslMechanismError):
            return f"SASL mechanism {security.mechanism} is not enabled at {broker}: {_text(cause)}"
        if isinstance(cause, e.TopicAuthorizationFailedError):
            return f"not authorized at {broker} for topic(s) {_text(cause) or '?'} (missing ACL: READ/WRITE/DESCRIBE)"
        if isinstance(cause, e.GroupAuthorizationFailedError):
            return f"not authorized at {broker} for consumer group {_text(cause) or '?'} (missing ACL: READ on GROUP)"
        if isinstance(cause, e.TransactionalIdAuthorizationFailed):
            return (
                f"not authorized at {broker} for transactional id {_text(cause) or '?'} "
                "(missing ACL: WRITE on TRANSACTIONAL_ID)"
            )
        if isinstance(cause, e.ClusterAuthorizationFailedError):
            return f"not authorized at {broker} for a cluster operation (missing ACL on CLUSTER): {_text(cause)}"
        if isinstance(cause, e.KafkaError) and "Authorization" in type(cause).__name__:
            return f"not authorized at {broker}: {_text(cause) or type(cause).__name__}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause)
            return f"TLS: cannot trust the certificate of {broker} ({reason}); check --ssl-cafile" + (
                " and that the broker's certificate names this host" if "hostname" in str(reason).lower() else ""
            )
        if isinstance(cause, ssl.SSLError):
            reason = getattr(cause, "reason", None) or cause
            return f"TLS handshake with {broker} failed ({reason}); check --security-protocol and the certificates"
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, then what it wraps (cause, context, exception arguments), each once."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
        todo += [arg for arg in getattr(item, "args", ()) if isinstance(arg, BaseException)]
    return seen


def _text(exc: BaseException) -> str:
    """The detail of a broker error, without aiokafka's class description."""
    parts = [str(arg) for arg in getattr(exc, "args", ()) if not isinstance(arg, BaseException)]
    text = " ".join(p for p in parts if p).strip()
    return text[:300]


async def check_access(broker: str, security: KafkaSecurity | None, timeout_s: float = 15.0) -> None:
    """Connect to each bootstrap server once with `security`; KafkaAccessError (one line) if one refuses the
    TLS handshake or the SASL login. Unreachable servers are left to the caller (a plain connection error)."""
    if security is None or security.protocol == "PLAINTEXT":
        return
    from aiokafka.conn import create_conn

    context = security.ssl_context()
    for server in broker.removeprefix("kafka://").split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    client_id="ccmeter-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    ssl_context=context,
                    security_protocol=security.protocol,
                    sasl_mechanism=security.mechanism or "PLAIN",
                    sasl_plain_username=security.username,
                    sasl_plain_password=security.password,
                ),
                timeout_s,
            )
        except Exception as exc:  # noqa: BLE001 - refusals are reported, anything else is the caller's to see
            line = access_error(exc, server, security)
            if line is not None:
                raise KafkaAccessError(line) from None
            continue
        conn.close()
        return


async def check_group_access(broker: str, security: KafkaSecurity | None, group: str, timeout_s: float = 15.0) -> None:
    """KafkaAccessError (one line) if `security`'s principal may not use consumer group `group`: DESCRIBE (finding
    its coordinator) and READ (an offset commit for a topic that does not exist, refused for the group before the
    topic is looked at, and storing nothing). Without this a refused group join makes aiokafka retry silently
    forever. Nothing to check for PLAINTEXT; errors other than refusals are left to the caller's own clients."""
    if security is None or security.protocol == "PLAINTEXT":
        return
    from aiokafka import errors as e
    from aiokafka.client import AIOKafkaClient, CoordinationType
    from aiokafka.protocol.commit import OffsetCommitRequest

    client = AIOKafkaClient(
        bootstrap_servers=broker,
        client_id="ccmeter-check",
        request_timeout_ms=int(timeout_s * 1000),
        **client_kwargs(security),
    )
    denied: BaseException | None = None
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        coordinator = await asyncio.wait_for(client.coordinator_lookup(CoordinationType.GROUP, group), timeout_s)
        probe = f"{group}-ccmeter-access-check"  # never created: a granted commit answers UNKNOWN_TOPIC_OR_PARTITION
        request = OffsetCommitRequest(group, -1, "", -1, [(probe, [(0, 0, "")])])
        response = await asyncio.wait_for(client.send(coordinator, request), timeout_s)
        codes = {code for _, partitions in response.topics for _, code in partitions}
        if e.GroupAuthorizationFailedError.errno in codes:
            denied = e.GroupAuthorizationFailedError(group)
    except e.GroupAuthorizationFailedError:
        denied = e.GroupAuthorizationFailedError(group)
    except (TimeoutError, e.KafkaError, OSError):
        pass  # not a refusal of the group: the worker's own clients report it
    finally:
        await client.close()
    if denied is not None:
        raise KafkaAccessError(access_error(denied, broker, security) or str(denied))


def settings_table() -> str:
    """The security settings as a Markdown table (docs/security.md)."""
    rows = ["| flag | environment | meaning |", "|---|---|---|"]
    rows += [f"| `{s.flag}` | `{s.env}` | {s.help} |" for s in SETTINGS]
    rows.append(f"| (none) | `{PASSWORD_ENV}` | the SASL password itself, when no password file is given |")
    rows.append(f"| (none) | `{KEY_PASSWORD_ENV}` | the key password itself, when no key password file is given |")
    return "\n".join(rows)
