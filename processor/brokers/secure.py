"""A secured throwaway Kafka: SASL_SSL for clients, SCRAM/PLAIN users, TLS from a throwaway CA, ACLs enforced.

`SecureKafka` is the `KafkaServer` of processor.brokers.kafka_server (same jars, JVM flags, temp dir and
lifecycle) with this set-up:

  * Listeners, all on 127.0.0.1:
      - SASL_SSL  (`bootstrap`, advertised): for clients. TLS with a broker certificate for 127.0.0.1/localhost
        (subjectAltName) issued by a CA generated at start (`ca_file`, PEM); SASL mechanisms SCRAM-SHA-256,
        SCRAM-SHA-512 and PLAIN. Principals are `User:<name>`.
      - INTERNAL (inter-broker) and CONTROLLER (KRaft): SSL with required client certificates (mutual TLS). The
        broker/controller authenticates with its own certificate, principal `User:CN=ccmeter-broker`. Nothing on
        these listeners is anonymous, so there is no unauthenticated path into the cluster.
  * Users: `admin` plus `users` (default: the components of processor.brokers.acls -- producer, worker, sink,
    alerts, replay-publish --, `ccmeter`, and `guest` for tests of their own), each with a random password
    (`users` maps name -> password), created AT STORAGE FORMAT TIME (`kafka-storage format --add-scram
    'SCRAM-SHA-256=[name=...,password=...]'`, and the same for SCRAM-SHA-512); PLAIN reads the same users from
    the listener's JAAS config. No user can be added while the broker runs (aiokafka has no SCRAM-credential API).
  * Authorization: KRaft's `org.apache.kafka.metadata.authorizer.StandardAuthorizer` with
    `allow.everyone.if.no.acl.found=false`; super users are `User:admin` and the broker's own principal.
    Everybody else can do nothing until granted: `grant("producer", "topic", "events.", ["write", "describe"],
    pattern="PREFIXED")` (see processor.brokers.acl; it returns once the broker enforces the new ACLs).

    with SecureKafka() as kafka:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **kafka.client_kwargs("admin"))

Readiness is probed over mutual TLS on the INTERNAL listener (ApiVersions + Metadata). Tests get a session-wide
instance from the `secure_broker` fixture (tests/conftest.py). `python -m processor.brokers.secure` runs one in
the foreground and prints the users, their passwords and the CA file.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import ssl
import sys
import tempfile
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from aiokafka.helpers import create_ssl_context

from processor.brokers.acl import allow_bindings, create_acls
from processor.brokers.common import BrokerError, free_port, serve_forever
from processor.brokers.kafka_server import HOST, KafkaServer, KafkaServerError
from processor.brokers.probe import probe_brokers
from processor.brokers.tls import TlsFiles, write_tls_files

SUPER_USER = "admin"
DEFAULT_USERS = ("producer", "worker", "sink", "alerts", "replay-publish", "ccmeter", "guest")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = (*SCRAM_MECHANISMS, "PLAIN")
BROKER_CN = "ccmeter-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN}"
CLIENT_LISTENER = "SASL_SSL"
INTERNAL_LISTENER = "INTERNAL"
CONTROLLER_LISTENER = "CONTROLLER"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


class AclLike(Protocol):
    """Anything with the fields of processor.brokers.acl.AclBinding (e.g. processor.brokers.acls.Acl)."""

    @property
    def principal(self) -> str: ...
    @property
    def resource_type(self) -> str: ...
    @property
    def resource_name(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def pattern(self) -> str: ...
    @property
    def host(self) -> str: ...


def random_password() -> str:
    """A random password of hex digits (safe inside --add-scram's `[name=..,password=..]` and JAAS quotes)."""
    return secrets.token_hex(16)


def secure_properties(
    port: int, internal_port: int, controller_port: int, tls: TlsFiles, users: Mapping[str, str]
) -> dict[str, str]:
    """The server.properties entries that turn the plain single-node broker into the secured one."""
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    client = CLIENT_LISTENER.lower()
    return {
        "listeners": f"{CLIENT_LISTENER}://{HOST}:{port},{INTERNAL_LISTENER}://{HOST}:{internal_port},"
        f"{CONTROLLER_LISTENER}://{HOST}:{controller_port}",
        "advertised.listeners": f"{CLIENT_LISTENER}://{HOST}:{port},{INTERNAL_LISTENER}://{HOST}:{internal_port}",
        "listener.security.protocol.map": f"{CLIENT_LISTENER}:SASL_SSL,{INTERNAL_LISTENER}:SSL,"
        f"{CONTROLLER_LISTENER}:SSL",
        "inter.broker.listener.name": INTERNAL_LISTENER,
        "controller.listener.names": CONTROLLER_LISTENER,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.keystore_file),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca_file),
        "ssl.endpoint.identification.algorithm": "https",
        f"listener.name.{INTERNAL_LISTENER.lower()}.ssl.client.auth": "required",
        f"listener.name.{CONTROLLER_LISTENER.lower()}.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        f"listener.name.{client}.scram-sha-256.sasl.jaas.config": _SCRAM_LOGIN,
        f"listener.name.{client}.scram-sha-512.sasl.jaas.config": _SCRAM_LOGIN,
        f"listener.name.{client}.plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule"
        f" required {plain_users};",
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{SUPER_USER};{BROKER_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_format_arguments(users: Mapping[str, str]) -> list[str]:
    """`kafka-storage format` arguments creating every user for both SCRAM mechanisms."""
    return [
        argument
        for name, password in users.items()
        for mechanism in SCRAM_MECHANISMS
        for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
    ]


class SecureKafka(KafkaServer):
    """A single-node KRaft Kafka with SASL_SSL clients, SCRAM/PLAIN users and ACLs (see the module docstring)."""

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        users: Iterable[str] = DEFAULT_USERS,
        passwords: Mapping[str, str] | None = None,
        mechanism: str = "SCRAM-SHA-256",
        tls_dir: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(port, controller_port, **kwargs)
        if mechanism not in MECHANISMS:
            raise KafkaServerError(f"unknown SASL mechanism {mechanism!r}; expected one of {', '.join(MECHANISMS)}")
        names = list(dict.fromkeys([SUPER_USER, *users]))
        bad = [name for name in names if not name or not name.replace("-", "").replace("_", "").isalnum()]
        if bad:
            raise KafkaServerError(f"user names must be letters, digits, '-' or '_': {bad}")
        given = dict(passwords or {})
        self.users: dict[str, str] = {name: given.get(name) or random_password() for name in names}
        self.mechanism = mechanism
        self.tls_dir = tls_dir
        self.internal_port = 0
        self.tls: TlsFiles | None = None

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) clients must trust."""
        if self.tls is None:
            raise KafkaServerError("the Kafka server is not started")
        return self.tls.ca_file

    @property
    def broker_principal(self) -> str:
        """The principal of the broker/controller on its mutual-TLS listeners (a super user)."""
        return BROKER_PRINCIPAL

    def _launch(self, java: str, lib: Path) -> None:
        assert self.workdir is not None
        self.tls = write_tls_files(self.tls_dir or self.workdir / "tls", BROKER_CN)
        self.internal_port = free_port(HOST)
        while self.internal_port in (self.port, self.controller_port):
            self.internal_port = free_port(HOST)
        super()._launch(java, lib)

    def _server_properties(self) -> dict[str, str]:
        assert self.tls is not None
        props = super()._server_properties()
        props.update(secure_properties(self.port, self.internal_port, self.controller_port, self.tls, self.users))
        props.update(self.extra_properties)
        return props

    def _format_arguments(self) -> list[str]:
        return scram_format_arguments(self.users)

    def _probe(self) -> bool:
        assert self.tls is not None
        context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        return bool(probe_brokers(HOST, self.internal_port, timeout=2.0, ssl_context=context))

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the broker's CA (hostname checked against 127.0.0.1)."""
        return create_ssl_context(cafile=str(self.ca_file))

    def client_kwargs(self, user: str = SUPER_USER, *, mechanism: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments that connect as `user` over SASL_SSL (producer, consumer, admin, client)."""
        if user not in self.users:
            raise KeyError(f"unknown user {user!r}; the broker has {', '.join(self.users)}")
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": self.ssl_context(),
            "sasl_mechanism": mechanism or self.mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": self.users[user],
        }

    async def grant_async(
        self,
        principal: str,
        resource_type: str,
        name: str,
        operations: str | Sequence[str],
        *,
        pattern: str = "LITERAL",
        host: str = "*",
        timeout: float = 30.0,
    ) -> None:
        """Allow `principal` (a user name or "User:name") `operations` on a resource, as the super user, and
        return once the broker enforces it. resource_type: topic, group, cluster, transactional_id, ...;
        operations: read, write, describe, create, idempotent_write, all, ...; pattern: LITERAL or PREFIXED."""
        bindings = allow_bindings(principal, resource_type, name, operations, pattern=pattern, host=host)
        await create_acls(self.client_kwargs(SUPER_USER), self.bootstrap, bindings, timeout=timeout)

    async def grant_all_async(self, acls: Iterable[AclLike], *, timeout: float = 30.0) -> None:
        """Grant ALLOW entries given as objects with AclBinding's fields (e.g. processor.brokers.acls.Acl), in one
        admin connection; returns once the broker enforces all of them."""
        bindings = [
            binding
            for acl in acls
            for binding in allow_bindings(
                acl.principal, acl.resource_type, acl.resource_name, acl.operation, pattern=acl.pattern, host=acl.host
            )
        ]
        await create_acls(self.client_kwargs(SUPER_USER), self.bootstrap, bindings, timeout=timeout)

    def grant_all(self, acls: Iterable[AclLike], *, timeout: float = 30.0) -> None:
        """`grant_all_async` for synchronous code (see `grant`)."""
        _run(self.grant_all_async(list(acls), timeout=timeout))

    def grant(
        self,
        principal: str,
        resource_type: str,
        name: str,
        operations: str | Sequence[str],
        *,
        pattern: str = "LITERAL",
        host: str = "*",
        timeout: float = 30.0,
    ) -> None:
        """`grant_async` for synchronous code (also callable from inside a running event loop: it then runs in a
        worker thread with its own loop and blocks the caller until done)."""
        _run(self.grant_async(principal, resource_type, name, operations, pattern=pattern, host=host, timeout=timeout))


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to completion from sync code, or from a worker thread when an event loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


def main(argv: list[str] | None = None) -> int:
    """`python -m processor.brokers.secure`: run a secured Kafka in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m processor.brokers.secure",
        description="Run a throwaway single-node Apache Kafka (KRaft) on 127.0.0.1 with a SASL_SSL listener "
        "(SCRAM-SHA-256/512 and PLAIN users, TLS from a CA generated now, ACLs enforced) until Ctrl-C. "
        "Prints the users and their passwords; `admin` is a super user, the others start with no rights.",
    )
    parser.add_argument("--port", type=int, default=9093, help="SASL_SSL client port (default: 9093; 0 = any free)")
    parser.add_argument(
        "--tls-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ccmeter-kafka-secure",
        help="where to write the CA certificate ca.pem and the broker's PEM files (default: %(default)s)",
    )
    parser.add_argument(
        "--user", action="append", default=None, help=f"a user to create (repeatable; default: {DEFAULT_USERS})"
    )
    args = parser.parse_args(argv)
    try:
        server = SecureKafka(args.port or None, users=args.user or DEFAULT_USERS, tls_dir=args.tls_dir)
        print(f"CA certificate: {args.tls_dir / 'ca.pem'}  (SASL mechanisms: {', '.join(MECHANISMS)})")
        for name, password in server.users.items():
            print(f"user {name}: password {password}{'  (super user)' if name == SUPER_USER else ''}")
        return serve_forever(server, "secured Kafka (SASL_SSL)")
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
