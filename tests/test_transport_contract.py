"""The contract every transport keeps, checked against its real peer (subprocess, sshd, the ADB daemon)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from profiler.transports.base import Transport
from profiler.transports.errors import CommandTimedOut, Interrupted, UnexpectedExit

HOSTILE_NAMES = ["two words.txt", 'it\'s "quoted".txt', "semi;touch INJECTED;.txt", "$(touch INJECTED).txt"]


def test_run_returns_output_and_exit_code(transport: Transport):
    """A command's stdout and exit status come back in the Result."""
    result = transport.run(["sh", "-c", "echo hello; exit 3"], timeout=10, check=False)
    assert (result.stdout, result.exited, result.ok) == ("hello\n", 3, False)


def test_failed_command_raises_with_command_and_output(transport: Transport):
    """check=True turns a non-zero exit into UnexpectedExit naming device, command and output."""
    with pytest.raises(UnexpectedExit) as caught:
        transport.run(["sh", "-c", "echo bad input; exit 2"], timeout=10)
    message = str(caught.value)
    assert transport.device in message
    assert "status 2" in message
    assert "bad input" in message
    assert "echo bad input; exit 2" in message


def test_command_outliving_timeout_is_abandoned(transport: Transport):
    """A command that runs past its timeout raises CommandTimedOut promptly instead of hanging."""
    started = time.monotonic()
    with pytest.raises(CommandTimedOut, match="within 1 s"):
        transport.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 10
    assert transport.run(["echo", "still usable"], timeout=10).stdout == "still usable\n"


def test_push_pull_round_trip_and_skip_unchanged(transport: Transport, tmp_path: Path, device_dir: str):
    """A pushed file comes back byte for byte; pushing it again sends nothing."""
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    remote = transport.join(device_dir, "payload.bin")
    assert transport.push(source, remote) is True
    assert transport.push(source, remote) is False
    back = transport.pull(remote, tmp_path / "back" / "payload.bin")
    assert back.read_bytes() == source.read_bytes()


def test_push_all_hashes_a_batch_in_one_command_and_sends_only_what_differs(transport: Transport, tmp_path: Path,
                                                                          device_dir: str, monkeypatch):
    """The device's copies of a batch are hashed by one command (a few where the paths outgrow one); a file it
    lacks or holds other bytes of is sent, an identical one is not, and a missing one is no hash at all."""
    files = {transport.join(device_dir, f"{i:02d}-{'x' * 90}.bin"): tmp_path / f"{i}.bin" for i in range(40)}
    for index, local in enumerate(files.values()):
        local.write_bytes(bytes([index]) * 1000)
    commands: list[str] = []
    execute = transport._execute
    monkeypatch.setattr(transport, "_execute", lambda command, timeout: commands.append(command) or
                        execute(command, timeout))
    first = dict(list(files.items())[:3])
    assert transport.push_all(first) == list(first)
    assert [c.split()[0] for c in commands] == ["sha256sum"]
    changed = list(files.values())[1]
    changed.write_bytes(b"other bytes")
    commands.clear()
    assert transport.push_all(files) == [r for r in files if r not in first or files[r] == changed]
    # 40 paths of 150-odd characters: a few commands, each within the 4 KB an old ADB shell service takes.
    assert {c.split()[0] for c in commands} == {"sha256sum"} and 1 < len(commands) < 5
    assert max(map(len, commands)) < 4096
    remote = next(r for r in files if files[r] == changed)
    assert transport.pull(remote, tmp_path / "back.bin").read_bytes() == b"other bytes"
    missing = transport.join(device_dir, "missing.bin")
    assert transport.remote_sha256s([remote, missing]).keys() == {remote}
    assert transport.remote_sha256(missing) is None


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_are_data_not_code(transport: Transport, tmp_path: Path, device_dir: str, name: str):
    """Names with spaces, quotes, `;` and `$(...)` survive push, run and pull, and inject nothing."""
    source = tmp_path / "source.txt"
    source.write_text("payload\n")
    remote = transport.join(device_dir, name)
    assert transport.push(source, remote) is True
    assert transport.push(source, remote) is False  # its hash is read back under the hostile name
    assert transport.run(["cat", remote], timeout=10).stdout == "payload\n"
    assert transport.pull(remote, tmp_path / "back.txt").read_text() == "payload\n"
    listing = transport.run(["ls", "-A", device_dir], timeout=10).stdout.splitlines()
    assert listing == [name]
    # The injected `touch INJECTED` would have created the file in the command's working folder or here.
    assert "INJECTED" not in transport.run(["ls", "-A", "."], timeout=10).stdout


def test_close_is_idempotent_and_reopens_lazily(transport: Transport):
    """close() twice is harmless, and the next call connects again."""
    transport.run(["true"], timeout=10)
    transport.close()
    transport.close()
    assert transport.run(["echo", "again"], timeout=10).stdout == "again\n"


def test_bare_string_command_is_refused(transport: Transport):
    """A command given as one string is refused: it would be quoted as a single program name."""
    with pytest.raises(ValueError, match="list of arguments"):
        transport.run("ls -l", timeout=10)  # type: ignore[arg-type]


def test_interrupt_stops_a_running_command_and_the_last_word_still_runs(transport: Transport, tmp_path: Path):
    """interrupt() from another thread (a signal handler's) ends a running command within 2 s; every later call
    is refused, but last_word() still runs one short command on a fresh connection (how a run stops its agent)."""
    marker = str(tmp_path / "last word")  # every peer here keeps its files on this machine, in tmp_path
    threading.Timer(0.5, transport.interrupt).start()
    started = time.monotonic()
    with pytest.raises(Interrupted, match="rerun the same command"):
        transport.run(["sleep", "30"], timeout=60)
    assert time.monotonic() - started < 2.5
    with pytest.raises(Interrupted):
        transport.run(["true"], timeout=10)
    with pytest.raises(Interrupted):
        transport.pause(5)
    assert transport.last_word(["touch", marker], within_s=5) is True
    assert transport.last_word(["false"], within_s=5) is False
    assert Path(marker).exists()
