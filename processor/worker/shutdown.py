"""A deadline for the worker's stop.

On SIGTERM/SIGINT the worker releases its partitions cleanly: it writes a last checkpoint and closes its Kafka
clients. With the broker gone that waits for ever (the clients retry), and a service manager's stop would hang until
it kills the process. `arm_stop_deadline` bounds it: past the deadline the process ends at once with exit status 1.
That is safe: a stop that does not finish is a crash, and a crash loses nothing (the checkpoint order of
processor/worker/checkpoint.py; the next start resumes from the last checkpoint).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from processor.errors import EXIT_FAILURE

log = logging.getLogger("ccmeter.worker")


def arm_stop_deadline(seconds: float) -> threading.Timer:
    """Start the countdown (a daemon thread: a stop that finishes first ends the process and the countdown)."""
    timer = threading.Timer(seconds, _expire, args=(seconds,))
    timer.daemon = True
    timer.name = "ccmeter-stop-deadline"
    timer.start()
    return timer


def _expire(seconds: float) -> None:
    log.error(
        "stop did not finish within %gs (--shutdown-timeout; is the broker reachable?): exiting now; the next start "
        "resumes from the last checkpoint",
        seconds,
    )
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_FAILURE)
