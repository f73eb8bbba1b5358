"""Bad links between the host and a device: a TCP proxy on loopback (tests/peers/tcp_proxy.py) in front of sshd
or the ADB daemon.

A link that stalls mid-batch, and a link that drops every few seconds: the table ends complete, nothing measured
twice, nothing lost.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.run_state import journal_path
from supernet.units import all_units
from tests.peers.sshd import Sshd, known_hosts_line
from tests.peers.tcp_proxy import TcpProxy
from tests.peers.waiting import wait_until

EXPECTED = {unit.key for unit in all_units(1.0, [128])}
TABLE = "local_w1.0_onnxruntime_cpu.csv"


def _over_ssh(sshd: Sshd, proxy: TcpProxy, tmp_path: Path) -> list[str]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(proxy.port, sshd.host_key))
    return ["--via", "ssh", "--host", "127.0.0.1", "--port", str(proxy.port), "--user", sshd.user, "--key",
            str(sshd.client_key), "--known-hosts", str(known_hosts)]


def _argv(link: list[str], tmp_path: Path, cache: Path, *extra: str) -> list[str]:
    return ["--device", "local", *link, "--python", sys.executable, "--width", "1.0", "--resolutions", "128",
            "--rows", "isolated", "--min-time", "0.002", "--min-count", "3", "--warmup", "0", "--retries", "0",
            "--drift-tolerance", "0.95", "--cooldown", "0", "--block-ms", "1", "--quiet",
            # Tiny units in 1 ms blocks may fail the regime check, and the longer blocks it escalates to make a
            # batch outlast a link up a few seconds: these tests are about the link (test_builder tests the check).
            "--regime-tolerance", "0.99",
            "--out", str(tmp_path / "tables"), "--cache", str(cache), *extra]


def _rows(tmp_path: Path) -> list[dict]:
    journal = journal_path(tmp_path / "tables" / TABLE)
    if not journal.exists():
        return []
    return [r for r in map(json.loads, journal.read_text().splitlines()) if r["type"] == "row"]


def _device_results(device: Path) -> str:
    return "".join(p.read_text() for p in device.glob("**/b*/results.jsonl"))


@pytest.mark.slow
def test_a_link_that_stalls_12_s_mid_batch_ends_with_the_full_table(sshd: Sshd, tmp_path: Path, monkeypatch,
                                                                     export_cache: Path):
    device = tmp_path / "device"
    (tmp_path / "devices.toml").write_text(f"[devices.local]\nremote_dir = {json.dumps(str(device))}\n")
    monkeypatch.chdir(tmp_path)
    with TcpProxy(sshd.port) as proxy:
        stalled = threading.Event()

        def stall_mid_batch() -> None:
            if wait_until(lambda: '"type": "result"' in _device_results(device), "a result on the device",
                          timeout_s=300, stop=done.is_set):
                # Longer than a channel's open timeout (10 s), far shorter than a batch's (120 s and more): the
                # run either waits the stall out or reconnects, and 30 s tested nothing more than 12 s.
                proxy.stall(12)
                stalled.set()

        done = threading.Event()
        watcher = threading.Thread(target=stall_mid_batch)
        watcher.start()
        try:
            assert main(_argv(_over_ssh(sshd, proxy, tmp_path), tmp_path, export_cache)) == 0
        finally:
            done.set()
            watcher.join()
    assert stalled.is_set(), "the link never stalled"
    keys = [r["key"] for r in _rows(tmp_path)]
    assert set(keys) == EXPECTED and len(keys) == len(EXPECTED), "every row once"


@pytest.mark.slow
@pytest.mark.parametrize("via", ["ssh", "adb"])
def test_a_link_that_drops_every_few_seconds_ends_complete_after_reruns(via, tmp_path: Path, monkeypatch, capsys,
                                                                        request, export_cache: Path):
    device = tmp_path / "device"
    (tmp_path / "devices.toml").write_text(f"[devices.local]\nremote_dir = {json.dumps(str(device))}\n")
    monkeypatch.chdir(tmp_path)
    peer = request.getfixturevalue("sshd" if via == "ssh" else "adb_daemon")
    progress = []
    with TcpProxy(peer.port) as proxy:
        if via == "ssh":
            link = _over_ssh(peer, proxy, tmp_path)
        else:
            link = ["--via", "adb", "--serial", f"127.0.0.1:{proxy.port}", "--adb-key",
                    str(request.getfixturevalue("adb_key"))]
        # Each rerun first stops the agent the dropped link left and collects its batch, then starts the next: a
        # batch's turn (connect, hash and send files, start Python and ONNX Runtime, measure, pull) took 2-4 s on
        # this 2-core VM when each file was hashed by a command of its own, and a link up 4 s at a time stalled at
        # 61 of 96 rows in one slow run; with one hashing command a turn takes about 1.5 s, so a link up 8 s holds
        # a batch even beside another test, and still drops mid-batch.
        stop = proxy.drop_every(8.0)
        try:
            for _ in range(40):
                code = main(_argv(link, tmp_path, export_cache, "--reconnects", "2", "--backoff", "0.2",
                                  "--batch-rows", "5"))
                err = capsys.readouterr().err.strip().splitlines()
                last = err[-1] if err else ""
                progress.append((len(_rows(tmp_path)), last[:200]))
                if code == 0:
                    break
                # The whole line: the command that was running when the link dropped may push the advice past
                # the 200 characters kept for the report.
                assert "bring the device back and rerun the same command" in last, progress
        finally:
            stop.set()
    assert code == 0, f"rows and last line after each run: {progress}"
    assert proxy.drops >= 1, "the link never dropped"
    counts = collections.Counter(r["key"] for r in _rows(tmp_path))
    twice = sorted(key for key, n in counts.items() if n > 1)
    assert set(counts) == EXPECTED and not twice, f"nothing lost, nothing measured twice: {twice}, {progress}"
