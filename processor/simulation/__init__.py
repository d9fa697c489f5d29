"""Synthetic contact-center session events: agents on shifts, supervisors in the portal, API integrations,
plans per account, and delivery faults (duplicates, late arrivals, orphans, malformed lines).

Deterministic for a seed. Use `write_events` for files and `simulate` / `iter_records` in tests.
"""

from processor.simulation.config import PROFILE_CHOICES, PROFILES, SimConfig
from processor.simulation.output import (
    SimRecord,
    SimStats,
    iter_lines,
    iter_records,
    output_format,
    simulate,
    write_events,
)

__all__ = [
    "PROFILES",
    "PROFILE_CHOICES",
    "SimConfig",
    "SimRecord",
    "SimStats",
    "iter_lines",
    "iter_records",
    "output_format",
    "simulate",
    "write_events",
]
