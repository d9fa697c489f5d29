"""Optional TLS of the worker's HTTP server (`--web-tls-cert`, `--web-tls-key`), through Faust's documented
`web_ssl_context` setting, and the matching client context the worker uses to forward live queries to its peers."""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server's context from PEM files; ValueError with one line if they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--web-tls-cert {cert} / --web-tls-key {key}: cannot load them ({exc})") from None
    return context


def peer_context(cert: str) -> ssl.SSLContext:
    """The client context for peers: the system's CAs plus the certificate file itself as a trust anchor, so that
    workers sharing one certificate (self-signed or not) verify each other; host names are checked."""
    context = ssl.create_default_context()
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cafile=cert)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--web-tls-cert {cert}: cannot use it to verify peers ({exc})") from None
    return context


def contexts(cert: str | None, key: str | None) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server context, peer client context), both None without TLS; ValueError when only one file is given."""
    if not cert and not key:
        return None, None
    if not (cert and key):
        raise ValueError("--web-tls-cert and --web-tls-key go together")
    return server_context(cert, key), peer_context(cert)
