"""The secured Kafka (processor.brokers.secure): its configuration and TLS material without a JVM, then the real
broker of the `secure_broker` fixture: SASL_SSL as the super user with every mechanism, ACL denial and grants,
wrong passwords, a client trusting another CA, and no way in without a certificate on the broker's own listeners."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from processor.brokers.acl import AclBinding, allow_bindings
from processor.brokers.common import tail_file
from processor.brokers.kafka_server import HOST, KafkaServerError
from processor.brokers.probe import probe_brokers
from processor.brokers.secure import (
    BROKER_PRINCIPAL,
    MECHANISMS,
    SecureKafka,
    scram_format_arguments,
    secure_properties,
)
from processor.brokers.tls import issue_cert, make_ca, write_tls_files

TIMEOUT = 30.0


# --- configuration and TLS material (no JVM) ---------------------------------------------------------------------


def test_broker_certificate_names_127_0_0_1_and_localhost_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = make_ca()
    files = write_tls_files(tmp_path, "ccmeter-broker", ca=ca)
    cert = x509.load_pem_x509_certificates(files.cert_file.read_bytes())[0]
    cert.verify_directly_issued_by(ca.cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert files.ca_file.read_bytes() == ca.cert_pem
    keystore = files.keystore_file.read_text()
    assert "BEGIN PRIVATE KEY" in keystore and keystore.count("BEGIN CERTIFICATE") == 2
    assert files.key_file.stat().st_mode & 0o077 == 0
    with pytest.raises(InvalidSignature):  # another CA of the same name did not sign it
        issue_cert(ca, "other").cert.verify_directly_issued_by(make_ca().cert)


def test_secure_properties_leave_no_anonymous_listener(tmp_path: Path) -> None:
    tls = write_tls_files(tmp_path, "ccmeter-broker")
    props = secure_properties(9093, 9094, 9095, tls, {"admin": "a1", "guest": "g2"})
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9093,INTERNAL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["listener.name.internal.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["super.users"] == f"User:admin;{BROKER_PRINCIPAL}"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert 'user_admin="a1" user_guest="g2";' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert props["sasl.enabled.mechanisms"] == ",".join(MECHANISMS)


def test_users_are_created_for_both_scram_mechanisms_at_format_time() -> None:
    assert scram_format_arguments({"admin": "pw"}) == [
        "--add-scram",
        "SCRAM-SHA-256=[name=admin,password=pw]",
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=pw]",
    ]


def test_constructor_and_client_kwargs_reject_bad_input() -> None:
    server = SecureKafka(users=["producer"], passwords={"admin": "fixed"})
    assert list(server.users) == ["admin", "producer"] and server.users["admin"] == "fixed"
    assert len(server.users["producer"]) == 32
    with pytest.raises(KeyError, match="unknown user 'nobody'"):
        server.client_kwargs("nobody")
    with pytest.raises(KafkaServerError, match="not started"):
        server.client_kwargs("admin")
    with pytest.raises(KafkaServerError, match="unknown SASL mechanism"):
        SecureKafka(mechanism="GSSAPI")
    with pytest.raises(KafkaServerError, match="user names"):
        SecureKafka(users=["bad,name"])


def test_allow_bindings_name_principals_and_check_names() -> None:
    [binding] = allow_bindings("producer", "topic", "events.", "write", pattern="PREFIXED")
    assert binding.wire() == (2, "events.", 4, "User:producer", "*", 4, 3)
    [cluster] = allow_bindings("User:worker", "cluster", "", ["idempotent_write"])
    assert cluster.resource_name == "kafka-cluster" and cluster.principal == "User:worker"
    with pytest.raises(ValueError, match="unknown operation 'wrote'"):
        allow_bindings("producer", "topic", "t", ["wrote"])
    with pytest.raises(ValueError, match="unknown pattern type"):
        allow_bindings("producer", "topic", "t", "read", pattern="MATCH")
    with pytest.raises(ValueError, match="no operations"):
        allow_bindings("producer", "topic", "t", [])


# --- the real secured broker -------------------------------------------------------------------------------------


def _log(kafka: SecureKafka) -> str:
    return f"\n--- secured Kafka log tail ({kafka.log_path}) ---\n{tail_file(kafka.log_path, 30)}"


async def _create_topic(kafka: SecureKafka, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.client_kwargs("admin"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


async def _produce(
    kafka: SecureKafka, user: str, topic: str, values: list[bytes], mechanism: str | None = None
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", **kafka.client_kwargs(user, mechanism=mechanism)
    )
    await producer.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            for value in values:
                await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume(kafka: SecureKafka, user: str, topic: str, group: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        **kafka.client_kwargs(user),
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(values) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    values.extend(record.value for record in batch)
    finally:
        await consumer.stop()
    return values


@pytest.mark.kafka
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_admin_produces_and_consumes_over_sasl_ssl(
    secure_broker: SecureKafka, topic_prefix: str, unique_name: Callable[[str], str], mechanism: str
) -> None:
    topic = f"{topic_prefix}admin"
    values = [f"v{i}".encode() for i in range(5)]

    async def scenario() -> list[bytes]:
        await _create_topic(secure_broker, topic)
        await _produce(secure_broker, "admin", topic, values, mechanism)
        return await _consume(secure_broker, "admin", topic, unique_name("group"), len(values))

    assert asyncio.run(scenario()) == values, _log(secure_broker)


@pytest.mark.kafka
def test_user_without_acls_is_denied_until_granted(secure_broker: SecureKafka, topic_prefix: str) -> None:
    topic = f"{topic_prefix}guarded"
    group = f"{topic_prefix}group"
    asyncio.run(_create_topic(secure_broker, topic))

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(secure_broker, "guest", topic, [b"denied"]))
    secure_broker.grant("guest", "topic", topic, ["write", "describe"])
    asyncio.run(_produce(secure_broker, "guest", topic, [b"one", b"two"]))

    secure_broker.grant("guest", "topic", topic, "read")  # the topic, but not yet the group
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(_consume(secure_broker, "guest", topic, group, 2))
    secure_broker.grant_all([AclBinding("User:guest", "group", topic_prefix, "read", pattern="prefixed")])
    assert asyncio.run(_consume(secure_broker, "guest", topic, group, 2)) == [b"one", b"two"], _log(secure_broker)

    with pytest.raises(TopicAuthorizationFailedError):  # grants are per resource: another topic stays closed
        asyncio.run(_produce(secure_broker, "guest", f"{topic_prefix}other", [b"x"]))


@pytest.mark.kafka
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_fails_sasl_authentication(secure_broker: SecureKafka, mechanism: str) -> None:
    async def connect(user: str, password: str) -> None:
        kwargs = secure_broker.client_kwargs("admin", mechanism=mechanism)
        kwargs.update(sasl_plain_username=user, sasl_plain_password=password)
        conn = await create_conn(HOST, secure_broker.port, request_timeout_ms=int(TIMEOUT * 1000), **kwargs)
        conn.close()

    asyncio.run(connect("admin", secure_broker.users["admin"]))  # the right password gets in
    with pytest.raises(SaslAuthenticationFailed):
        asyncio.run(connect("admin", "not-" + secure_broker.users["admin"]))
    with pytest.raises(SaslAuthenticationFailed):
        asyncio.run(connect("nobody", "whatever"))

    async def produce_with_wrong_password() -> None:
        kwargs = secure_broker.client_kwargs("admin", mechanism=mechanism)
        kwargs["sasl_plain_password"] = "wrong"
        producer = AIOKafkaProducer(bootstrap_servers=secure_broker.bootstrap, **kwargs)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaConnectionError):
        asyncio.run(produce_with_wrong_password())


@pytest.mark.kafka
def test_client_trusting_another_ca_fails_the_tls_handshake(secure_broker: SecureKafka, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(make_ca("some other CA").cert_pem)

    async def connect() -> None:
        kwargs = secure_broker.client_kwargs("admin")
        kwargs["ssl_context"] = create_ssl_context(cafile=str(other_ca))
        conn = await create_conn(HOST, secure_broker.port, request_timeout_ms=int(TIMEOUT * 1000), **kwargs)
        conn.close()

    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        asyncio.run(connect())


@pytest.mark.kafka
def test_no_way_in_without_tls_or_a_client_certificate(secure_broker: SecureKafka) -> None:
    assert secure_broker.tls is not None
    trusting_only = ssl.create_default_context(cafile=str(secure_broker.ca_file))
    with_cert = ssl.create_default_context(cafile=str(secure_broker.ca_file))
    with_cert.load_cert_chain(str(secure_broker.tls.cert_file), str(secure_broker.tls.key_file))

    with pytest.raises(OSError):  # a plaintext client on the SASL_SSL port
        probe_brokers(HOST, secure_broker.port, timeout=5.0)
    for port in (secure_broker.internal_port, secure_broker.controller_port):
        with pytest.raises(OSError):  # mutual TLS: a client without a certificate is turned away
            probe_brokers(HOST, port, timeout=5.0, ssl_context=trusting_only)
    brokers = probe_brokers(HOST, secure_broker.internal_port, timeout=5.0, ssl_context=with_cert)
    assert [(b.host, b.port) for b in brokers] == [(HOST, secure_broker.internal_port)], _log(secure_broker)
