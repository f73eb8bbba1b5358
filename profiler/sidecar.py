"""The sidecar of a table a run builds: how, where and at what device state its numbers were taken."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from predictors.calibration import Calibration, CalibrationError
from predictors.table_io import sidecar_path
from profiler.devices import DeviceProfile
from profiler.measure import agent_files
from profiler.protocol import Protocol
from profiler.reference import Reference
from profiler.rows import RowStrategy
from profiler.run_state import RunState
from profiler.steady import regime_summary
from supernet.files import json_loads
from supernet.quantize import recipe as quantization_recipe

__all__ = ["AGENT_VERSION", "LATENCY", "kept_calibration", "measured_with", "now", "table_meta", "timing"]

log = logging.getLogger(__name__)

AGENT_VERSION = "4"

LATENCY = ("the steady state of back-to-back runs after a warm-up, as benchmark_model and onnxruntime_perf_test "
           "report it")


def timing(protocol: Protocol, state: RunState | None = None) -> dict[str, Any]:
    """How items were timed, in words and settings: what a reader of a table or a subnet CSV needs to know."""
    described = {
        "latency": LATENCY,
        "how": "each item is timed in a plain back-to-back loop, then in blocks alternating with the reference "
               "workload (each block's first settle_ms discarded); its value is its blocked ratio to the reference "
               "times the anchor, and each batch's blocked times are checked against its plain loops",
        "block_ms": protocol.block_ms,
        "settle_ms": protocol.settle_ms,
        "steady_count": protocol.steady_count,
        "regime_tolerance": protocol.regime_tolerance,
    }
    if state is not None:
        described["regime"] = regime_summary(state.regime_checks)
    return described


def measured_with(state: RunState, protocol: Protocol, command: str) -> dict[str, Any]:
    """The settings and command that measured the kept rows, not those of the run writing the sidecar (a rerun
    with other settings that measures nothing changes no row). One set: ``settings`` and ``command``; several:
    those of the most rows, and ``measured_with`` lists each with its row count. Rows journaled before rows
    carried their settings count under ``settings: null``."""
    groups: dict[str, int] = {}
    for record in state.kept.values():
        key = json.dumps({"settings": record.get("settings"), "command": record.get("command")}, sort_keys=True)
        groups[key] = groups.get(key, 0) + 1
    if not groups:
        return {"settings": protocol.to_dict(), "command": command, "written_by": command}
    ranked = sorted(groups.items(), key=lambda item: -item[1])
    listed = [{**json.loads(key), "rows": rows} for key, rows in ranked]
    first = listed[0]
    described = {"settings": first["settings"] or protocol.to_dict(), "command": first["command"] or command,
                 "written_by": command}
    if len(listed) > 1:
        described["measured_with"] = listed
    return described


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
        "precision": profile.precision,
        **({"quantization": quantization_recipe(profile.precision, profile.model_format)}
           if profile.precision != "fp32" else {}),
        "environment": state.environment,
        "agent": {"name": agent_files(profile)[0], "version": AGENT_VERSION},
        **measured_with(state, protocol, extra.get("command", "")),
        **strategy.describe(),
        "reference": {**reference.describe(), "anchor": state.anchor(),
                      "protocol": "every item is timed in alternating blocks with the reference; a value in ms is "
                                  "its ratio to the reference times anchor_ms"},
        "timing": timing(protocol, state),
        "journal": journal_name,
        "rows_measured": rows_measured,
        "rows_planned": len(strategy.planned_keys()),
        "items_measured": len(state.kept),
        "items_above_max_cv": wide,
        "reference_median_ms": state.baseline_ms,
        "updated": now(),
    }


def kept_calibration(table: Path, anchor_ms: float | None) -> dict[str, Any] | None:
    """The calibration the table's sidecar holds (``--calibrate``, the closed loop), for the sidecar a rerun or
    ``--reanchor`` writes: restated at ``anchor_ms`` where the table's anchor moved, never dropped."""
    try:
        stored = json_loads(sidecar_path(table).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    values = stored.get("calibration") if isinstance(stored, dict) else None
    if not isinstance(values, dict):
        return None
    before = ((stored.get("reference") or {}).get("anchor") or {}).get("anchor_ms")
    if not before or not anchor_ms or before == anchor_ms:
        return values
    try:
        return Calibration.from_dict(values).restated(anchor_ms / before).to_dict()
    except (CalibrationError, TypeError, ValueError) as err:
        log.warning("%s: the calibration could not be restated at the new anchor (%s); kept as it was",
                    sidecar_path(table), err)
        return values
