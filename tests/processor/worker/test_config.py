"""Worker settings: flags, CCMETER_* variables, defaults, durations, and the table in docs/running.md."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import pytest

from processor.cli import build_parser
from processor.worker.config import OPTIONS, WorkerConfig, add_arguments, parse_duration_ms, settings_table

ROOT = Path(__file__).resolve().parents[3]


def parse(argv: list[str], env: dict[str, str] | None = None) -> WorkerConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return WorkerConfig.from_args(parser.parse_args(argv), env or {})


def test_defaults_match_the_dataclass():
    config = parse([])
    assert config == WorkerConfig()
    for option in OPTIONS:
        assert getattr(config, option.name) == option.default


def test_flag_beats_environment_beats_default():
    env = {"CCMETER_BROKER": "kafka:9093", "CCMETER_BATCH_SIZE": "700", "CCMETER_DEVICE_TIMEOUT": "2m"}
    config = parse(["--batch-size", "50"], env)
    assert config.broker == "kafka:9093"
    assert config.batch_size == 50
    assert config.device_timeout == 120_000
    assert config.settings.device_timeout_ms == 120_000
    assert parse(["--near-capacity", "85%"]).near_capacity == Fraction(17, 20)


def test_bad_values_are_user_errors():
    with pytest.raises(SystemExit):
        parse(["--store", "redis://x"])
    with pytest.raises(ValueError, match="CCMETER_WEB_PORT"):
        parse([], {"CCMETER_WEB_PORT": "99999"})
    with pytest.raises(SystemExit):
        parse(["--broker", "no-port"])


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("30s", 30_000), ("15m", 900_000), ("1h", 3_600_000), ("2d", 172_800_000), ("2", 2000)],
)
def test_durations(text, ms):
    assert parse_duration_ms(text) == ms


def test_worker_and_publish_are_registered():
    parser = build_parser()
    args = parser.parse_args(["worker", "--web-port", "7000"])
    assert args.web_port == 7000 and callable(args.func)
    args = parser.parse_args(["publish", "events.jsonl", "--broker", "h:1"])
    assert args.file == "events.jsonl" and callable(args.func)


def test_settings_table_in_docs_is_current():
    assert settings_table() in (ROOT / "docs" / "running.md").read_text()


def test_events_topic_defaults_to_the_prefix_and_can_be_another_topic() -> None:
    assert parse([], {}).events == "ccmeter.events"
    assert parse(["--prefix", "ccmeter.v2."], {}).events == "ccmeter.v2.events"
    config = parse(["--prefix", "ccmeter.v2.", "--events-topic", "ccmeter.events"], {})
    assert (config.events_topic, config.events) == ("ccmeter.events", "ccmeter.events")
    assert parse([], {"CCMETER_EVENTS_TOPIC": "live.events"}).events == "live.events"
    with pytest.raises(SystemExit):
        parse(["--events-topic", "no spaces allowed"], {})


def test_web_access_settings() -> None:
    config = parse([], {})
    assert config.web_bind == "127.0.0.1"  # loopback unless asked
    assert (config.web_tokens_file, config.web_tokens, config.web_insecure_no_auth) == (None, None, False)
    assert parse(["--web-insecure-no-auth"], {}).web_insecure_no_auth is True
    assert parse([], {"CCMETER_WEB_INSECURE_NO_AUTH": "yes"}).web_insecure_no_auth is True
    assert parse([], {"CCMETER_WEB_INSECURE_NO_AUTH": "0"}).web_insecure_no_auth is False
    with pytest.raises(ValueError, match="CCMETER_WEB_INSECURE_NO_AUTH"):
        parse([], {"CCMETER_WEB_INSECURE_NO_AUTH": "maybe"})
    with pytest.raises(SystemExit):
        parse(["--web-insecure-no-auth", "yes"], {})  # a switch takes no value
    config = parse(["--web-tokens-file", "t.txt", "--web-tls-cert", "c.pem", "--web-tls-key", "k.pem"], {})
    assert (config.web_tokens_file, config.web_tls_cert, config.web_tls_key) == ("t.txt", "c.pem", "k.pem")
    assert parse([], {"CCMETER_WEB_TOKENS": "sha256:ab operator"}).web_tokens == "sha256:ab operator"
