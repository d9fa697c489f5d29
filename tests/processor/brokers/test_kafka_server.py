"""KafkaServer: configuration and error paths (no JVM), its lifecycle, and a keyed round-trip on the session broker."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from processor.brokers.common import free_port, port_in_use
from processor.brokers.kafka_server import (
    KafkaServer,
    KafkaServerError,
    check_kafka_lib,
    kafka_lib_dir,
    random_cluster_id,
    server_properties,
)
from processor.brokers.probe import probe_brokers
from processor.topics import EVENTS, create_topics, topic_names
from tests.processor.brokers.roundtrip import group_timeouts, roundtrip


def test_missing_jars_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCMETER_KAFKA_LIB", str(tmp_path))
    assert kafka_lib_dir() == tmp_path.resolve()
    with pytest.raises(KafkaServerError, match="make kafka-jars"):
        check_kafka_lib()
    with pytest.raises(KafkaServerError, match="make kafka-jars"):
        KafkaServer().start()


def test_taken_port_is_reported_before_starting_java(tmp_path: Path) -> None:
    (tmp_path / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(KafkaServerError, match="already in use"):
            KafkaServer(port, lib_dir=tmp_path).start()


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = server_properties(19092, 19093, tmp_path)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["auto.create.topics.enable"] == "false"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor", "num.partitions"):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert server_properties(1, 2, tmp_path, auto_create_topics=True)["auto.create.topics.enable"] == "true"
    assert server_properties(1, 2, tmp_path, extra={"num.partitions": "3"})["num.partitions"] == "3"


def test_random_cluster_id_is_a_kafka_uuid() -> None:
    ids = {random_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.kafka
@pytest.mark.slow
def test_lifecycle_starts_serves_and_cleans_up() -> None:
    check_kafka_lib()  # a clear failure rather than a skip: `make test` fetches the jars first
    port = free_port()
    with KafkaServer(port) as server:
        assert server.bootstrap == f"127.0.0.1:{port}"
        assert [b.port for b in probe_brokers("127.0.0.1", port)] == [port]
        assert server.log_path.is_file()
        workdir = server.workdir
        process = server._process
        created = asyncio.run(create_topics(server.bootstrap, "life.", partitions=2))
        assert created == list(topic_names("life.").values())
    assert workdir is not None and not workdir.exists()
    assert process is not None and process.poll() is not None
    deadline = time.monotonic() + 5
    while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_in_use("127.0.0.1", port)
    server.stop()  # idempotent


@pytest.mark.kafka
def test_keyed_roundtrip_on_session_broker(
    broker: str, broker_kind: str, topic_prefix: str, unique_name: Callable[[str], str]
) -> None:
    asyncio.run(create_topics(broker, topic_prefix, partitions=3))
    topic = topic_names(topic_prefix)[EVENTS]
    asyncio.run(roundtrip(broker, topic, unique_name("group"), group_timeouts(broker_kind)))
