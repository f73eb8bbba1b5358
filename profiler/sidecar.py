"""The sidecar of a table a run builds: how, where and at what device state its numbers were taken."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from profiler.devices import DeviceProfile
from profiler.measure import agent_files
from profiler.protocol import Protocol
from profiler.reference import Reference
from profiler.rows import RowStrategy
from profiler.run_state import RunState

__all__ = ["AGENT_VERSION", "now", "table_meta"]

AGENT_VERSION = "3"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def table_meta(
    extra: Mapping[str, Any],
    profile: DeviceProfile,
    protocol: Protocol,
    strategy: RowStrategy,
    reference: Reference,
    state: RunState,
    journal_name: str,
    rows_measured: int,
) -> dict[str, Any]:
    wide = sum(1 for record in state.kept.values() if record["cv"] > protocol.max_cv)
    return {
        **extra,
        "device": dataclasses.asdict(profile),
        "runtime": profile.runtime,
        "provider": profile.provider,
        "environment": state.environment,
        "agent": {"name": agent_files(profile)[0], "version": AGENT_VERSION},
        "settings": protocol.to_dict(),
        **strategy.describe(),
        "reference": {**reference.describe(), "anchor": state.anchor(),
                      "protocol": "every item is timed in alternating blocks with the reference; a value in ms is "
                                  "its ratio to the reference times anchor_ms"},
        "journal": journal_name,
        "rows_measured": rows_measured,
        "rows_planned": len(strategy.planned_keys()),
        "items_measured": len(state.kept),
        "items_above_max_cv": wide,
        "reference_median_ms": state.baseline_ms,
        "updated": now(),
    }
