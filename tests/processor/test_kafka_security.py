"""Kafka security settings: flags and environment, validation lines, secrets kept out of help/repr/errors, kwargs."""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import errors as kafka_errors

from processor import kafka_security as ks
from processor.cli import build_parser, main

SECRET = "s3cret-Pa55word"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ks.add_security_options(parser)
    return parser.parse_args(argv)


@pytest.fixture()
def ca_file() -> Path:
    import certifi  # a real PEM bundle (aiohttp/requests dependency) so the SSL context really loads

    return Path(certifi.where())


def test_default_is_plaintext_and_adds_no_client_arguments() -> None:
    security = ks.security_from_args(parse(), env={})
    assert security == ks.KafkaSecurity()
    assert security.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert ks.client_kwargs(security) == {}
    assert security.faust_credentials() is None


def test_flags_build_sasl_ssl(tmp_path: Path, ca_file: Path) -> None:
    password = tmp_path / "password"
    password.write_text(SECRET + "\n")
    args = parse(
        "--security-protocol", "sasl_ssl", "--ssl-cafile", str(ca_file), "--sasl-mechanism", "scram-sha-512",
        "--sasl-username", "worker", "--sasl-password-file", str(password),
    )  # fmt: skip
    security = ks.security_from_args(args, env={})
    kwargs = security.aiokafka_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "worker" and kwargs["sasl_plain_password"] == SECRET
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_environment_fills_in_and_flags_win(ca_file: Path) -> None:
    env = {
        "CCMETER_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CCMETER_SASL_MECHANISM": "PLAIN",
        "CCMETER_SASL_USERNAME": "from-env",
        "CCMETER_SASL_PASSWORD": SECRET,
    }
    security = ks.security_from_args(parse(), env=env)
    assert (security.protocol, security.mechanism, security.username, security.password) == (
        "SASL_PLAINTEXT", "PLAIN", "from-env", SECRET,
    )  # fmt: skip
    assert "ssl_context" not in security.aiokafka_kwargs()
    overridden = ks.security_from_args(parse("--sasl-username", "from-flag", "--sasl-mechanism", "SCRAM-SHA-256"), env)
    assert (overridden.username, overridden.mechanism) == ("from-flag", "SCRAM-SHA-256")


def test_hostname_check_opt_out_by_flag_and_env(ca_file: Path) -> None:
    env = {"CCMETER_SECURITY_PROTOCOL": "SSL", "CCMETER_SSL_CAFILE": str(ca_file)}
    assert ks.security_from_args(parse(), env).ssl_context().check_hostname
    by_flag = ks.security_from_args(parse("--ssl-no-check-hostname"), env)
    by_env = ks.security_from_args(parse(), {**env, "CCMETER_SSL_CHECK_HOSTNAME": "false"})
    for security in (by_flag, by_env):
        context = security.ssl_context()
        assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ks.SecurityConfigError, match="expected true or false"):
        ks.security_from_args(parse(), {**env, "CCMETER_SSL_CHECK_HOSTNAME": "maybe"})


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        ({"protocol": "TLS"}, {}, "--security-protocol 'TLS': expected one of PLAINTEXT, SSL"),
        ({"protocol": "SSL", "cafile": "/no/such/ca.pem"}, {}, "--ssl-cafile /no/such/ca.pem: no such file"),
        ({"cafile": "/etc/hostname"}, {}, "--ssl-cafile needs --security-protocol SSL or SASL_SSL"),
        ({"protocol": "SASL_SSL"}, {}, "--sasl-mechanism is missing"),
        ({"protocol": "SASL_SSL", "mechanism": "GSSAPI"}, {}, "'GSSAPI' is not supported"),
        ({"protocol": "SASL_SSL", "mechanism": "PLAIN"}, {}, "--sasl-mechanism PLAIN needs --sasl-username"),
        ({"protocol": "SASL_SSL", "mechanism": "PLAIN", "username": "u"}, {}, "needs a password"),
        ({"mechanism": "PLAIN"}, {}, "--sasl-mechanism needs --security-protocol SASL_PLAINTEXT or SASL_SSL"),
        ({}, {"CCMETER_SASL_PASSWORD": SECRET}, "a SASL password needs --security-protocol"),
        (
            {"protocol": "SASL_SSL", "mechanism": "PLAIN", "username": "u", "password_file": "/no/such/file"},
            {},
            "--sasl-password-file /no/such/file: cannot read it (No such file or directory)",
        ),
    ],
)
def test_invalid_settings_give_one_line(given: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ks.SecurityConfigError) as caught:
        ks.security_from_mapping(given, env)
    text = str(caught.value)
    assert message in text and "\n" not in text and SECRET not in text


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    given = {"protocol": "SASL_PLAINTEXT", "mechanism": "PLAIN", "username": "u", "password_file": str(empty)}
    with pytest.raises(ks.SecurityConfigError, match="the file is empty"):
        ks.security_from_mapping(given, {})


def test_secrets_stay_out_of_repr_help_and_child_command_lines(tmp_path: Path) -> None:
    security = ks.security_from_mapping(
        {"protocol": "SASL_PLAINTEXT", "mechanism": "PLAIN", "username": "u"}, {"CCMETER_SASL_PASSWORD": SECRET}
    )
    assert SECRET not in repr(security) and SECRET not in str(security) and "<hidden>" in repr(security)
    assert SECRET not in repr(security.faust_credentials())
    assert ks.access_error(kafka_errors.SaslAuthenticationFailed("bad"), "h:1", security) is not None
    assert SECRET not in ks.access_error(kafka_errors.SaslAuthenticationFailed("bad"), "h:1", security)
    # A password given by file travels to children as the file's name; one from the environment stays there.
    password = tmp_path / "pw"
    password.write_text(SECRET)
    by_file = ks.security_from_mapping(
        {"protocol": "SASL_PLAINTEXT", "mechanism": "PLAIN", "username": "u", "password_file": str(password)}, {}
    )
    assert by_file.child_env()["CCMETER_SASL_PASSWORD_FILE"] == str(password)
    assert SECRET not in by_file.child_env().values()
    assert security.child_env()["CCMETER_SASL_PASSWORD"] == SECRET
    with ks.use_security(by_file):
        env = ks.child_env({"PATH": "/bin"})
    assert env["CCMETER_SASL_USERNAME"] == "u" and env["PATH"] == "/bin"
    assert ks.child_env({"PATH": "/bin"}) == {"PATH": "/bin"}  # nothing active outside the block
    assert "CCMETER_SASL_USERNAME" not in ks.plaintext_env(env)


def test_no_password_flag_and_help_of_every_kafka_command() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - walk the registered subcommands
    kafka_parsers = {
        "worker": commands["worker"],
        "publish": commands["publish"],
        "sink": commands["sink"],
        "topics create": commands["topics"]._subparsers._group_actions[0].choices["create"],  # noqa: SLF001
        "alerts deliver": commands["alerts"]._subparsers._group_actions[0].choices["deliver"],  # noqa: SLF001
        "replay publish": commands["replay"]._subparsers._group_actions[0].choices["publish"],  # noqa: SLF001
    }
    for name, sub in kafka_parsers.items():
        text = sub.format_help()
        assert "--sasl-password-file" in text and "--security-protocol" in text, name
        flags = {flag for action in sub._actions for flag in action.option_strings}  # noqa: SLF001
        assert "--sasl-password" not in flags and "--password" not in flags, name


def test_cli_reports_a_bad_setting_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text("{}\n")
    status = main(["publish", str(events), "--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err == "ccmeter: error: --sasl-mechanism PLAIN needs --sasl-username\n"


def test_access_errors_become_one_line() -> None:
    security = ks.security_from_mapping(
        {"protocol": "SASL_PLAINTEXT", "mechanism": "SCRAM-SHA-256", "username": "sink"}, {"CCMETER_SASL_PASSWORD": "x"}
    )
    cases = {
        kafka_errors.SaslAuthenticationFailed("Authentication failed"): "authentication failed at b:9 for user "
        "'sink' (SCRAM-SHA-256): wrong user name or password",
        kafka_errors.TopicAuthorizationFailedError({"t.events"}): "not authorized at b:9 for topic(s) {'t.events'}",
        kafka_errors.GroupAuthorizationFailedError("g1"): "not authorized at b:9 for consumer group g1",
        kafka_errors.TransactionalIdAuthorizationFailed("w-0"): "for transactional id w-0",
        ssl.SSLCertVerificationError(1, "certificate verify failed"): "TLS: cannot trust the certificate of b:9",
    }
    for error, expected in cases.items():
        wrapped = RuntimeError("outer")
        wrapped.__cause__ = error
        line = ks.access_error(wrapped, "b:9", security)
        assert line is not None and expected in line and "\n" not in line, (error, line)
    assert ks.access_error(kafka_errors.KafkaConnectionError("Unable to bootstrap"), "b:9", security) is None


def test_check_access_reports_a_tls_refusal(ca_file: Path) -> None:
    """A TLS client against a PLAINTEXT-speaking port: the handshake fails, check_access says so in one line."""
    import asyncio
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 400 not TLS\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    security = ks.security_from_mapping({"protocol": "SSL", "cafile": str(ca_file)}, {})
    try:
        with pytest.raises(ks.KafkaAccessError, match=f"TLS handshake with 127.0.0.1:{port} failed"):
            asyncio.run(ks.check_access(f"127.0.0.1:{port}", security, timeout_s=20))
    finally:
        server.close()
        thread.join(timeout=5)


def test_help_never_shows_a_secret_from_the_environment() -> None:
    env = {"CCMETER_SASL_PASSWORD": SECRET, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", "worker", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout and "--sasl-password-file" in done.stdout
