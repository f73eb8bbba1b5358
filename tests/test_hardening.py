"""A device that lies, a poisoned journal, two runs on one table, Ctrl-C, and host faults named as such."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import profiler.agent_run
from predictors.accuracy import AccuracyPredictor
from predictors.latency_model import LatencyModel
from profiler.builder import MeasurementError, TableRun
from profiler.devices import resolve_device
from profiler.journal import Journal
from profiler.protocol import Protocol
from profiler.run_state import journal_path
from profiler.table_lock import TableLocked, lock_path, table_lock
from profiler.transports.local import LocalTransport
from supernet.errors import OFAProfileError
from supernet.files import MAX_INPUT_BYTES, InputTooLargeError, NotARegularFileError, atomic_write, read_input
from supernet.units import all_units
from tests.paths import NOTE10, ROOT
from tests.peers.waiting import wait_until

# Kept whatever the regime check says (test_builder tests it): these tests are about runs, not timing.
TINY = Protocol(warmup=0, min_count=3, min_time_s=0.0, retries=0, drift_tolerance=0.95, block_ms=1.0,
                regime_tolerance=0.99)
UNITS = all_units(1.0, [128])[:3]

# An "agent" that reports what a broken or hostile device might: a result named outside the batch, a negative
# median, and one honest-looking result; it measures nothing.
LIAR = textwrap.dedent('''
    import json, sys
    manifest = json.load(open(sys.argv[1]))
    names = [m["name"] for m in manifest["models"]]
    def result(name, median):
        samples = [median] * 3
        summary = {"median": median, "mean": median, "std": 0.0, "p10": median, "p90": median, "count": 3}
        ref = {"name": "reference", "samples_ms": [1.0] * 3, "summary": {**summary, "median": 1.0, "mean": 1.0,
               "p10": 1.0, "p90": 1.0}}
        return {"type": "result", "name": name, "samples_ms": samples, "summary": summary, "reference": ref,
                "ratio_samples": samples, "ratio": summary}
    with open(sys.argv[2], "a") as out:
        for record in (result("../../../tmp/x", 1.0), result(names[0], -5.0), result(names[1], 0.5)):
            out.write(json.dumps(record) + "\\n")
''')


def _run(tmp_path: Path, transport: LocalTransport) -> TableRun:
    return TableRun(resolve_device("local"), transport, UNITS, tmp_path / "t.csv", tmp_path / "cache", TINY)


def test_a_lying_device_gets_nothing_journaled_and_the_rerun_finishes(tmp_path, monkeypatch):
    """Results named outside the batch or with times that are not positive never reach the journal."""
    liar = tmp_path / "liar" / "python_agent.py"
    liar.parent.mkdir()
    liar.write_text(LIAR)
    monkeypatch.setattr(profiler.agent_run, "AGENT", liar)
    with LocalTransport() as transport, pytest.raises(MeasurementError, match=r"not valid: summary\.median = -5\.0"):
        _run(tmp_path, transport).run()
    rows = [r for r in Journal(journal_path(tmp_path / "t.csv")).records() if r["type"] == "row"]
    assert len(rows) == 1 and rows[0]["key"] in {u.key for u in UNITS}, "only the honest-looking result is kept"
    monkeypatch.undo()
    with LocalTransport() as transport:
        table = _run(tmp_path, transport).run()
    assert {row.key for row in table.rows} == {u.key for u in UNITS}


def test_a_poisoned_journal_is_set_aside_line_by_line(tmp_path, caplog):
    """Non-JSON lines, arrays, Infinity, negative medians and foreign keys are reported, never fatal."""
    with LocalTransport() as transport:
        _run(tmp_path, transport).run()
    journal = journal_path(tmp_path / "t.csv")
    good = [json.loads(line) for line in journal.read_text().splitlines()]
    row = next(r for r in good if r["type"] == "row")
    poison = [
        "{not json",
        "[1, 2, 3]",
        json.dumps({**row, "summary": {**row["summary"], "median": -5.0}}),
        json.dumps({**row, "key": "../../../tmp/x"}),
        json.dumps({**row, "cv": 1.0}).replace("1.0", "Infinity", 1),
        "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
    ]
    with open(journal, "a", encoding="latin-1") as f:
        f.write("\n".join(poison) + "\n")
    with LocalTransport() as transport:
        run = _run(tmp_path, transport)
        table = run.run()
    assert {r.key for r in table.rows} == {u.key for u in UNITS}
    assert len(run.state.set_aside) == 5 and run.state.outside == 1
    assert "line(s) set aside" in caplog.text and "-5.0" in caplog.text
    frame = pd.read_csv(tmp_path / "t.csv")
    assert (frame["median_ms"] > 0).all() and set(frame["key"]) == {u.key for u in UNITS}


def test_a_second_run_on_a_table_is_refused_naming_the_holder(tmp_path):
    table = tmp_path / "t.csv"
    with table_lock(table, "ofa-profile --device local"):
        second = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from profiler.table_lock import "
             "table_lock\nwith table_lock(Path(sys.argv[1])):\n pass", str(table)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"is being measured by PID {os.getpid()} on" in second.stderr
        assert "ofa-profile --device local" in second.stderr
        with table_lock(table):  # re-entered by the process that holds it (the closed loop's table step)
            pass
    with table_lock(table):  # released: taken again
        pass


def _hold_lock(table: Path) -> subprocess.Popen:
    """Another process holding the table's lock (as 'the killed run') until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from profiler.table_lock import "
         "table_lock\nwith table_lock(Path(sys.argv[1]), 'the killed run'):\n print('held', flush=True); "
         "time.sleep(60)", str(table)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    """flock dies with its holder; the next run logs whose lock it took over."""
    # On the module's own logger: a test before this one in the same worker may have run `ofa-profile --quiet`,
    # which leaves the "profiler" logger at WARNING.
    caplog.set_level(logging.INFO, logger="profiler.table_lock")
    table = tmp_path / "t.csv"
    holder = _hold_lock(table)
    with pytest.raises(TableLocked, match=f"PID {holder.pid}"), table_lock(table):
        pass
    holder.kill()
    holder.wait(timeout=10)
    holder.stdout.close()
    with table_lock(table):
        assert json.loads(lock_path(table).read_text())["pid"] == os.getpid()
    assert f"took over the lock of PID {holder.pid}" in caplog.text


def _profile_command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "profiler.cli", "--device", "local", "--width", "1.0", "--resolutions", "128",
            "--rows", "isolated", "--min-time", "0.5", "--min-count", "3", "--batch-rows", "200", "--block-ms", "1",
            "--retries", "0",
            "--quiet",
            "--out", str(out), "--cache", str(cache)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_within_2_s_and_the_rerun_keeps_every_row(tmp_path, signum, export_cache):
    """The agent is stopped with the run; rows it finished come back on the rerun, none measured twice."""
    out = tmp_path / "out"
    process = subprocess.Popen(_profile_command(out, export_cache), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    work = out / ".local_w1.0_onnxruntime_cpu.work"
    wait_until(lambda: '"type": "result"' in _results(work), "the first measured row", timeout_s=120,
               stop=lambda: process.poll() is not None)
    assert process.poll() is None, "the run ended before it was stopped"
    stopped = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - stopped < 2.0, f"took {time.monotonic() - stopped:.1f} s to stop"
    assert process.returncode == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Rerun the same command" in stderr
    assert "profiler.cli" not in stderr.split("Rerun")[0], "one line, no traceback"
    assert not _agents_running(work), "the agent must stop with the run"
    finished = _results(work).count('"type": "result"')
    subprocess.run([*_profile_command(out, export_cache), "--min-time", "0"], cwd=ROOT, check=True, timeout=600)
    rows = [r for r in Journal(journal_path(out / "local_w1.0_onnxruntime_cpu.csv")).records() if r["type"] == "row"]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == len({u.key for u in all_units(1.0, [128])})
    assert finished >= 1


@pytest.mark.slow
def test_a_signal_stops_the_closed_loop_within_2_s_while_it_searches(tmp_path):
    """ofa-profile runs each device in a worker thread, and signals reach only the main thread: the search (40
    budgets, about half a second each) must still stop within 2 s, not when the round's searches are done."""
    import numpy as np

    from predictors.latency import LatencyPredictor
    from predictors.latency_model import LatencyModel
    from supernet import ArchSpace

    table = LatencyPredictor(NOTE10, calibrated=False)
    samples = ArchSpace.for_width(1.2).samples(30, seed=3)
    archs = [a.with_resolution((160, 192, 224)[i % 3]) for i, a in enumerate(samples)]
    model = tmp_path / "model"
    LatencyModel(width_mult=1.2, method="ridge", cv=3).fit(archs, 1.3 * table.predict(archs)).save(model)
    budgets = ",".join(f"{b:.2f}" for b in np.linspace(20, 40, 40))
    process = subprocess.Popen([sys.executable, "-m", "profiler.cli", "--device", "local", "--width", "1.2",
                                "--search", "--latency-model", str(model), "--latency-ms", budgets, "--out",
                                str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # the line logged just before the first search
            if "latency model:" in line:
                break
        time.sleep(1.0)  # well inside round one's searches
        assert process.poll() is None, "the loop ended before it was stopped"
        stopped = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - stopped
    finally:
        process.kill()
    assert took < 2.0, f"took {took:.1f} s to stop"
    assert process.returncode == 130 and "stopped by SIGINT" in stderr, stderr[-2000:]

def _results(work: Path) -> str:
    return "".join(p.read_text() for p in work.glob("b*/results.jsonl"))


def _agents_running(work: Path) -> bool:
    listing = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    return bool(listing.stdout.strip())


def test_a_full_disk_on_the_host_is_named_as_the_host(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the table is this machine's problem: the message names the path, not the device."""
    import errno

    from profiler.cli import main
    from supernet import files

    real = files.os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)  # mocked: no full file system can be made here without root
    code = main(["--device", "local", "--width", "1.0", "--resolutions", "128", "--rows", "isolated",
                 "--min-time", "0", "--min-count", "3", "--out", str(tmp_path / "out"), "--cache",
                 str(tmp_path / "cache"), "--quiet"])
    monkeypatch.setattr(files.os, "fsync", real)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("ofa-profile: error: on this machine") and "No space left" in err
    assert str(tmp_path / "out") in err, "the message names the path"
    assert "free some space" in err and "reconnect" not in err and "device back" not in err


def test_a_lock_file_that_is_a_link_or_a_fifo_is_refused_and_its_target_kept(tmp_path):
    """Issue 25: a lock file symlinked to a user's file left that file at 0 bytes."""
    table = tmp_path / "t.csv"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    lock_path(table).symlink_to(precious)
    with pytest.raises(TableLocked, match="is a symbolic link"), table_lock(table):
        pass
    assert precious.read_text() == "keep me"
    lock_path(table).unlink()
    os.mkfifo(lock_path(table))
    with pytest.raises(TableLocked, match="not a regular file"), table_lock(table):
        pass


def test_a_refused_second_run_leaves_the_running_runs_journal_alone(tmp_path):
    """Issue 25: a second run trimmed the torn tail of the journal the first run was writing, before it was
    refused the lock. Only the lock holder repairs the journal."""
    table = tmp_path / "t.csv"
    journal = journal_path(table)
    journal.write_text('{"type": "reference", "median_ms": 1.0}\n{"type": "row", "key": "half-writ')
    before = journal.read_bytes()
    holder = _hold_lock(table)
    try:
        with LocalTransport() as transport, pytest.raises(TableLocked):
            _run(tmp_path, transport).run()
        assert journal.read_bytes() == before
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()


@pytest.mark.parametrize("kind", ["fifo", "char device", "link to a char device", "link to a pipe's fd"])
def test_an_output_that_is_a_special_file_is_refused_not_replaced(tmp_path, kind):
    """Issue 25: --out on a symlink to /proc/self/fd/1 or on a device node replaced it with a regular file. A link
    to a pipe's /proc fd resolves to a name no stat finds (pipe:[N]); it was refused only by the temp file's
    failure, naming a made-up path."""
    out = tmp_path / "out.csv"
    read_end, write_end = os.pipe()
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "char device":
        out = Path("/dev/null")
    elif kind == "link to a char device":
        out.symlink_to("/dev/null")
    else:
        out.symlink_to(f"/proc/self/fd/{write_end}")
    before = os.lstat(out)
    with pytest.raises(NotARegularFileError, match="is a FIFO, not a regular file; refusing to replace it"
                       if "pipe" in kind or kind == "fifo" else "not a regular file; refusing to replace it"):
        atomic_write(out, "a,b\n")
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    os.close(read_end)
    os.close(write_end)


def test_an_output_that_is_a_link_to_a_file_is_written_through(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic_write(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_ofa_search_refuses_an_out_that_is_a_link_to_a_device_node_in_one_line(tmp_path):
    out = tmp_path / "found.json"
    out.symlink_to("/dev/null")
    done = subprocess.run([sys.executable, "-m", "predictors.cli", "--table", str(ROOT / "tables" /
                           "note10_w1.2_tflite.csv"), "--latency-ms", "25", "--out", str(out), "--population", "20",
                           "--generations", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "/dev/null (through the symlink" in done.stderr.splitlines()[-1]
    assert out.is_symlink() and Path("/dev/null").is_char_device()


def test_the_sidecar_states_the_settings_that_measured_the_rows_not_those_of_a_rerun(tmp_path):
    """Issue 25: a rerun with --min-time 5 --min-count 500 measured nothing, and the sidecar then recorded those
    settings and that command. Rows carry their settings in the journal; the sidecar states theirs, and names
    the command that last wrote it apart."""
    from profiler.cli import main as profile_main

    # Tiny units in 1 ms blocks may fail the regime check on a busy machine, and the batch measured again in 25 ms
    # blocks then has other settings (it did once beside the rest of the suite): this test is about the sidecar.
    argv = ["--device", "local", "--width", "1.0", "--resolutions", "128", "--rows", "isolated", "--min-time", "0",
            "--min-count", "3", "--warmup", "0", "--block-ms", "1", "--regime-tolerance", "0.99", "--out",
            str(tmp_path), "--quiet"]
    assert profile_main(argv) == 0
    assert profile_main([*argv, "--min-time", "5", "--min-count", "500"]) == 0
    sidecar = json.loads((tmp_path / "local_w1.0_onnxruntime_cpu.json").read_text())
    assert sidecar["settings"]["min_count"] == 3 and sidecar["settings"]["min_time_s"] == 0
    assert "--min-count 500" not in sidecar["command"] and "--min-count 500" in sidecar["written_by"]
    assert "measured_with" not in sidecar
    rows = [r for r in Journal(journal_path(tmp_path / "local_w1.0_onnxruntime_cpu.csv")).records()
            if r["type"] == "row"]
    assert rows and all(r["settings"]["min_count"] == 3 for r in rows)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("command", [["predictors.cli", "--latency-ms", "25", "--table"],
                                     ["predictors.fit_cli", "accuracy", "--out", "m"],
                                     ["predictors.fit_cli", "latency", "--out", "m"],
                                     ["profiler.cli", "--device", "local", "--subnets", "random:2", "--table"]])
def test_an_input_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path, kind, command):
    """Issue 25: `ofa-search --table /dev/zero` grew to 24 GB until the kernel killed it, and a FIFO blocked
    forever; so did ofa-fit's CSVs. Inputs are read only from regular files (opened without blocking), within a
    size limit."""
    table = tmp_path / "fifo.csv"
    if kind == "fifo":
        os.mkfifo(table)
    else:
        table.symlink_to(kind)  # named like a table: ofa-profile refuses other suffixes before reading
    done = subprocess.run([sys.executable, "-m", *command, str(table)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{table} is a {'FIFO' if kind == 'fifo' else 'character device'}, not a regular file" in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("damaged", [("latency", ".json"), ("latency", ".npz"), ("accuracy", ".json"),
                                     ("accuracy", ".npz")])
def test_a_model_file_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path, kind, damaged):
    """A latency model's or accuracy predictor's file linked to /dev/zero was read until memory ran out (exit 70,
    MemoryError), and one that was a FIFO blocked forever: model files are inputs like tables, read only from
    regular files within the size limit."""
    data = ROOT / "predictors" / "data"
    stems = {"latency": data / "priors" / "local-ort-t1", "accuracy": data / "ofa_mbv3_w1.2_acc_predictor"}
    which, suffix = damaged
    for source in Path(stems[which]).parent.glob(f"{stems[which].name}.*"):
        shutil.copy(source, tmp_path / source.name)
    stem = tmp_path / stems[which].name
    # A predictor whose arrays are not a file falls back to its .pt: the arrays' case makes that one bad too.
    bad = [f"{stem}{s}" for s in ((".npz", ".pt") if damaged == ("accuracy", ".npz") else (suffix,))]
    for path in bad:
        os.unlink(path)
        os.mkfifo(path) if kind == "fifo" else os.symlink(kind, path)
    load = LatencyModel.load if which == "latency" else AccuracyPredictor.load
    with pytest.raises(OFAProfileError, match="not a regular file") as refused:
        load(stem)
    assert bad[-1] in str(refused.value)


def test_an_input_larger_than_any_the_project_writes_is_refused_unread(tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(InputTooLargeError, match=f"{big} is larger than 64 MB"):
        read_input(big)


def test_a_full_disk_under_the_local_devices_work_folder_is_this_machines_not_a_lost_device(tmp_path, monkeypatch):
    """Issue 25: --out on a full tmpfs read "still unreachable after 3 reconnect(s) ... bring the device back"
    after 37 s. The local device's folders are this machine's: ENOSPC there is a host error at once. (The copy's
    ENOSPC is mocked: a full file system cannot be made here without mounting one.)"""
    import errno
    import shutil

    from supernet.errors import HostError

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    source = tmp_path / "model.onnx"
    source.write_bytes(b"x")
    monkeypatch.setattr(shutil, "copy2", full)
    with LocalTransport() as transport, pytest.raises(HostError, match="free some space"):
        transport.push(source, str(tmp_path / "work" / "model.onnx"))
