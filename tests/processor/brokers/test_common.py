"""Port helpers of the embedded brokers."""

import socket
from pathlib import Path

import pytest

from processor.brokers import common
from processor.brokers.common import LOWEST_PICKED_PORT, ephemeral_ports, free_port


def _bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_lie_below_the_range_outgoing_connections_take_theirs_from() -> None:
    low, _ = ephemeral_ports()
    ports = {free_port() for _ in range(20)}
    assert all(LOWEST_PICKED_PORT <= port < low for port in ports)
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:
        _bind(port)  # free indeed


def test_a_port_in_use_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = taken.getsockname()[1]
        monkeypatch.setattr(common, "ephemeral_ports", lambda: (used + 1, 60_999))
        monkeypatch.setattr(common, "LOWEST_PICKED_PORT", used - 999)
        picks = {free_port() for _ in range(30)}
        assert used not in picks
        assert all(used - 999 <= port <= used for port in picks)


def test_without_room_below_the_range_the_os_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "ephemeral_ports", lambda: (LOWEST_PICKED_PORT + 10, 60_999))
    port = free_port()
    assert port >= LOWEST_PICKED_PORT + 10
    _bind(port)


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text("40000\t50000\n")
    monkeypatch.setattr(common, "EPHEMERAL_RANGE", source)
    assert ephemeral_ports() == (40_000, 50_000)
    source.write_text("garbage\n")
    assert ephemeral_ports() == (32_768, 60_999)
    monkeypatch.setattr(common, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert ephemeral_ports() == (32_768, 60_999)
