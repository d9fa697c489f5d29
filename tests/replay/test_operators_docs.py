"""Every command line of docs/operators.md parses with the real parsers (flags exist, values are well formed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from processor.cli import build_parser
from replay import launch

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
BLOCKS = re.findall(r"^ *```sh\n(.*?)^ *```", DOC.read_text(), re.S | re.M)
LINES = [line.strip() for block in BLOCKS for line in block.splitlines() if line.strip()]
CCMETER = [line for line in LINES if line.startswith(".venv/bin/ccmeter ")]
LAUNCH = [line for line in LINES if line.startswith(".venv/bin/python -m replay.launch ")]


def test_the_page_covers_every_replay_command() -> None:
    used = {shlex.split(line)[2] for line in CCMETER if shlex.split(line)[1] == "replay"}
    assert used == {"archive", "publish", "plan", "run", "verify", "restate", "carry"}
    assert LAUNCH
    assert all(line.startswith((".venv/bin/ccmeter ", ".venv/bin/python ", "diff ")) for line in LINES), LINES


@pytest.mark.parametrize("line", CCMETER)
def test_ccmeter_line_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert callable(args.func)


@pytest.mark.parametrize("line", LAUNCH)
def test_launch_line_parses(line: str) -> None:
    parsed = launch.build_parser().parse_args(shlex.split(line)[3:])
    assert parsed.events_topic == "ccmeter.events" and parsed.prefix == "ccmeter.v2."
