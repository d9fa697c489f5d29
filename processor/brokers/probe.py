"""Tiny synchronous Kafka-protocol probe: ApiVersions + Metadata over a plain socket.

Used to decide when a freshly started broker really serves clients: an open TCP port is not enough,
the broker must answer a Metadata request that lists at least one broker. No client library involved,
so it works from sync code, from inside a running event loop, and against Kafka and Tansu alike.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

API_METADATA = 3
API_VERSIONS = 18
_CLIENT_ID = b"ccmeter-probe"
_MAX_FRAME = 64 * 1024 * 1024


@dataclass(frozen=True)
class BrokerInfo:
    """One broker as listed in a Metadata response."""

    node_id: int
    host: str
    port: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _call(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes) -> _Reader:
    """Send one request (non-flexible header v1) and return a reader positioned after the correlation id."""
    header = struct.pack(">hhih", api_key, version, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    if not 4 <= size <= _MAX_FRAME:
        raise ConnectionError(f"implausible response size {size}")
    reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != correlation_id:
        raise ConnectionError("correlation id mismatch")
    return reader


def _metadata_body(version: int) -> bytes:
    body = struct.pack(">i", 0)  # an empty topic list: brokers only, no topics
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation = false
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations = false
    return body


def probe_brokers(
    host: str, port: int, timeout: float = 2.0, *, ssl_context: ssl.SSLContext | None = None
) -> list[BrokerInfo]:
    """Ask host:port for its ApiVersions and then its Metadata; return the brokers it lists.

    With `ssl_context` the probe speaks TLS (e.g. to a broker's mutual-TLS inter-broker listener).
    Raises OSError/ConnectionError (ssl.SSLError is an OSError) when the broker is not (yet) serving.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
        return _ask_for_brokers(sock)


def _ask_for_brokers(sock: socket.socket) -> list[BrokerInfo]:
    with sock:
        reader = _call(sock, API_VERSIONS, 0, 1, b"")
        error = reader.take(">h")
        ranges: dict[int, tuple[int, int]] = {}
        for _ in range(max(reader.take(">i"), 0)):
            key, low, high = reader.take(">h"), reader.take(">h"), reader.take(">h")
            ranges[key] = (low, high)
        if error != 0 or API_METADATA not in ranges:
            raise ConnectionError(f"ApiVersions failed (error code {error})")
        low, high = ranges[API_METADATA]
        version = max(low, 1)  # v1..v8 share the non-flexible layout parsed below
        if version > min(high, 8):
            raise ConnectionError(f"broker speaks Metadata v{low}..v{high}, the probe v1..v8")
        reader = _call(sock, API_METADATA, version, 2, _metadata_body(version))
        if version >= 3:
            reader.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(max(reader.take(">i"), 0)):
            node_id = reader.take(">i")
            broker_host = reader.string() or ""
            broker_port = reader.take(">i")
            if version >= 1:
                reader.string()  # rack
            brokers.append(BrokerInfo(node_id, broker_host, broker_port))
        return brokers
