"""Shared pytest fixtures.

Broker for `@pytest.mark.kafka` tests, chosen by $CCMETER_TEST_BROKER:
  * `kafka` (default): a real single-node Apache Kafka 4.x (KRaft) started once per session from the jars in
    tools/kafka/lib (`make test` resolves them first via `make kafka-jars`). Missing jars or Java fail the tests
    with a message saying so; they are never silently skipped.
  * `tansu`: the embedded in-memory Tansu broker (fast; no transactions, see processor/brokers/tansu.py).
  * `HOST:PORT`: an already running broker, e.g. `docker compose -f docker-compose.kafka.yml up -d` and then
    CCMETER_TEST_BROKER=localhost:9092. Where a Docker engine is reachable, a testcontainers
    `KafkaContainer("apache/kafka:4.1.1")` could provide that address too; this suite does not depend on Docker.

Tests isolate themselves with the `topic_prefix` fixture (unique topic names) and fresh consumer group ids.

Hypothesis profiles, chosen by $CCMETER_HYPOTHESIS: `fast` (default, what `make test` runs) and `long` (many more
examples, for a run before a release or after touching the fold, the worker's partition driver or the SQL engine).
They set the examples of tests that do not set their own (the contract suite, tests/contract/).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from processor.brokers.common import Broker, BrokerError
from processor.brokers.probe import probe_brokers

if TYPE_CHECKING:
    from processor.brokers.secure import SecureKafka

BROKER_ENV = "CCMETER_TEST_BROKER"
HYPOTHESIS_ENV = "CCMETER_HYPOTHESIS"

settings.register_profile("fast", max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get(HYPOTHESIS_ENV, "fast").strip().lower() or "fast")


@pytest.fixture(scope="session")
def broker_kind() -> str:
    """Which broker the session uses: "kafka", "tansu" or "external" (from $CCMETER_TEST_BROKER)."""
    choice = os.environ.get(BROKER_ENV, "kafka").strip().lower() or "kafka"
    if choice in ("kafka", "tansu"):
        return choice
    if re.fullmatch(r"[^\s:]+:\d+", choice):
        return "external"
    pytest.fail(f"${BROKER_ENV} must be 'kafka', 'tansu' or HOST:PORT, not {choice!r}", pytrace=False)


@pytest.fixture(scope="session")
def broker(broker_kind: str) -> Iterator[str]:
    """Bootstrap address ("HOST:PORT") of the session's broker; started on first use, stopped at the end."""
    if broker_kind == "external":
        address = os.environ[BROKER_ENV].strip()
        host, port = address.rsplit(":", 1)
        failure = None
        try:
            probe_brokers(host, int(port), timeout=5.0)
        except OSError as exc:
            failure = f"${BROKER_ENV}={address} does not answer Kafka requests: {exc}"
        if failure:
            pytest.fail(failure, pytrace=False)
        yield address
        return
    if broker_kind == "kafka":
        from processor.brokers.kafka_server import KafkaServer

        server: Broker = KafkaServer()
    else:
        from processor.brokers.tansu import TansuBroker

        server = TansuBroker()
    failure = None
    try:
        server.start()
    except BrokerError as exc:  # fail outside the except block: no "during handling" chain in the report
        failure = f"could not start the {broker_kind} test broker (${BROKER_ENV}={broker_kind}): {exc}"
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield server.bootstrap
    finally:
        server.stop()


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureKafka]:
    """A second, secured real Kafka for the session (processor.brokers.secure.SecureKafka), started on first use.

    SASL_SSL on `bootstrap` with TLS from a CA generated now (`ca_file`), SCRAM-SHA-256/512 and PLAIN users
    (`users`: name -> password; `admin` is the super user; producer, worker, sink, alerts, replay-publish, ccmeter
    and guest start with no rights),
    ACLs enforced. `client_kwargs(user)` gives aiokafka keyword arguments, `grant(principal, resource_type, name,
    operations, pattern="LITERAL"|"PREFIXED")` adds ACLs. Always a local Kafka, whatever $CCMETER_TEST_BROKER.
    """
    from processor.brokers.secure import SecureKafka

    server = SecureKafka()
    failure = None
    try:
        server.start()
    except BrokerError as exc:  # fail outside the except block: no "during handling" chain in the report
        failure = f"could not start the secured test Kafka: {exc}"
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic-name prefix unique to this test, e.g. "t.test_roundtrip.1a2b3c4d." (pass it to create_topics)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:80].strip("-")
    return f"t.{name}.{uuid.uuid4().hex[:8]}."


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A factory of unique names for ad-hoc topics and consumer groups: `unique_name("group")` -> "group-1a2b3c4d"."""

    def make(stem: str = "n") -> str:
        return f"{stem}-{uuid.uuid4().hex[:8]}"

    return make
