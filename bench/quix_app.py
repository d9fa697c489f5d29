"""The Quix Streams baseline: a straightforward Quix Streams app on the worker bench's events topic.

A simpler job than ccmeter's worker: per account (the record key) it keeps an event count and the set of user ids
seen (one state key per user plus a distinct-user count) in Quix's RocksDB state, with Quix's defaults (changelog
topic, at-least-once, commit every 5 s). Records are decoded by Quix's JSON deserializer (orjson, no validation).
No allowed lateness, no reorder buffer, no timers, no windows, no billing and no output records.

It reads the topic from the earliest offset with its own consumer group, times itself from the first record to
the `--limit`-th (wall and process CPU, librdkafka's threads included), writes {events, seconds, cpu_seconds,
rate} as JSON to `--result` (the protocol of bench/naive_agent.py), then stops.

Runs in its own environment (bench/out/quix-venv, made by bench/quix_env.py), not ccmeter's: it imports nothing
of the project.

    quix-venv/bin/python bench/quix_app.py --broker HOST:PORT --topic T --app-id ID --limit N --result FILE \\
        --state-dir DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, State


class Progress:
    """Counts records; times them from the first to the `limit`-th; then writes the result once and stops the app."""

    def __init__(self, limit: int, result: Path) -> None:
        self.limit = limit
        self.result = result
        self.n = 0
        self.t0 = self.cpu0 = 0.0
        self.app: Application | None = None

    def start(self) -> None:
        """Called before handling a record: starts the clock the first time."""
        if not self.t0:
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def add(self) -> None:
        """Called after handling a record: at the `limit`-th, writes the result and stops the app."""
        self.n += 1
        if self.n == self.limit:
            elapsed = time.perf_counter() - self.t0
            cpu = time.process_time() - self.cpu0
            body = {"events": self.n, "seconds": elapsed, "cpu_seconds": cpu, "rate": self.n / elapsed}
            tmp = self.result.with_name(self.result.name + ".tmp")
            tmp.write_text(json.dumps(body))
            tmp.replace(self.result)
            if self.app is not None:
                self.app.stop()


def build_app(broker: str, topic: str, app_id: str, state_dir: Path, progress: Progress) -> Application:
    """The app: one input topic (key: account id as text, value: JSON), one stateful update per record."""
    app = Application(
        broker_address=broker,
        consumer_group=app_id,
        auto_offset_reset="earliest",
        state_dir=str(state_dir),
        loglevel="INFO",
    )
    events = app.topic(topic, key_deserializer="str", value_deserializer="json")
    sdf = app.dataframe(events)

    def count(value: dict[str, Any], state: State) -> None:
        progress.start()
        state.set("events", state.get("events", 0) + 1)
        user = value.get("user_id")
        if user is not None and not state.exists(f"user/{user}"):
            state.set(f"user/{user}", True)
            state.set("users", state.get("users", 0) + 1)
        progress.add()

    sdf.update(count, stateful=True)
    progress.app = app
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the app until `--limit` records are processed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True, help="consumer group (a fresh one reads from the start)")
    parser.add_argument("--limit", type=int, required=True, help="time the first N records, then stop")
    parser.add_argument("--result", required=True, help="JSON result file")
    parser.add_argument("--state-dir", required=True, help="Quix's RocksDB state directory")
    args = parser.parse_args(argv)
    progress = Progress(args.limit, Path(args.result))
    app = build_app(args.broker, args.topic, args.app_id, Path(args.state_dir), progress)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
