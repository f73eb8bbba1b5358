"""SSH failures against a real sshd: each gives a clear error, and none hangs."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from profiler.transports.errors import AuthenticationFailed, ConnectionFailed, HostKeyError
from profiler.transports.ssh import SshTransport, main, trust_host
from tests.peers.sshd import Sshd, free_port, keygen, known_hosts_line
from tests.peers.waiting import when_running


def _client(sshd: Sshd, **overrides) -> SshTransport:
    options = {
        "port": sshd.port,
        "user": sshd.user,
        "key_filename": sshd.client_key,
        "known_hosts": sshd.known_hosts,
    }
    options.update(overrides)
    return SshTransport("127.0.0.1", connect_timeout=5, **options)


def test_connection_refused_names_device_and_fix(tmp_path: Path):
    """Nothing listening: ConnectionFailed naming the address and what to check."""
    port = free_port()
    transport = SshTransport("127.0.0.1", port=port, known_hosts=tmp_path / "kh")
    with transport, pytest.raises(ConnectionFailed, match=rf"127\.0\.0\.1:{port}.*could not") as caught:
        transport.run(["true"], timeout=5)
    assert "sshd runs there" in str(caught.value)


def test_wrong_key_is_refused(sshd: Sshd, tmp_path: Path):
    """A key the server does not know: AuthenticationFailed naming the key and authorized_keys."""
    stranger = keygen(tmp_path / "stranger")
    with _client(sshd, key_filename=stranger) as transport, pytest.raises(AuthenticationFailed) as caught:
        transport.run(["true"], timeout=5)
    assert str(stranger) in str(caught.value)
    assert "authorized_keys" in str(caught.value)


def test_unknown_host_key_is_refused_with_fingerprint(sshd: Sshd, tmp_path: Path):
    """A host missing from known_hosts is refused; the error shows its fingerprint and the trust command."""
    empty = tmp_path / "known_hosts"
    with _client(sshd, known_hosts=empty) as transport, pytest.raises(HostKeyError) as caught:
        transport.run(["true"], timeout=5)
    message = str(caught.value)
    assert "unknown host key ssh-ed25519 SHA256:" in message
    assert f"profiler.transports.ssh trust 127.0.0.1 --port {sshd.port}" in message
    assert not empty.exists()


def test_trust_host_prints_fingerprint_then_connects(sshd: Sshd, tmp_path: Path):
    """The explicit trust step prints the fingerprint ssh-keygen shows, and the host is then accepted."""
    known_hosts = tmp_path / "known_hosts"
    printed = io.StringIO()
    trusted = trust_host("127.0.0.1", port=sshd.port, known_hosts=known_hosts, out=printed)
    expected = subprocess.run(
        ["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert trusted == expected
    assert expected in printed.getvalue()
    assert known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    with _client(sshd, known_hosts=known_hosts) as transport:
        assert transport.run(["echo", "ok"], timeout=5).stdout == "ok\n"


def test_trust_command_line(sshd: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`python -m profiler.transports.ssh trust` enrols the host and prints the fingerprint on stderr."""
    known_hosts = tmp_path / "known_hosts"
    assert main(["trust", "127.0.0.1", "--port", str(sshd.port), "--known-hosts", str(known_hosts)]) == 0
    assert "SHA256:" in capsys.readouterr().err
    assert known_hosts.is_file()
    # No sshd there: one line naming the problem, inside the same error boundary as ofa-profile.
    assert main(["trust", "127.0.0.1", "--port", str(free_port()), "--known-hosts", str(known_hosts)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m profiler.transports.ssh: error: "), err


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path):
    """A host whose key differs from known_hosts is refused, with both fingerprints and the fix."""
    other = keygen(tmp_path / "other_host_key")
    stale = tmp_path / "known_hosts"
    stale.write_text(known_hosts_line(sshd.port, other))
    with _client(sshd, known_hosts=stale) as transport, pytest.raises(HostKeyError) as caught:
        transport.run(["true"], timeout=5)
    assert "host key CHANGED" in str(caught.value)
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in str(caught.value)
    with pytest.raises(HostKeyError, match="already holds a different"):
        trust_host("127.0.0.1", port=sshd.port, known_hosts=stale, out=io.StringIO())


def test_device_going_away_mid_command(sshd: Sshd):
    """sshd killed while a command runs: ConnectionFailed at once, not a wait for the timeout."""
    with _client(sshd) as transport:
        transport.open()
        # A command line no other test runs (see the ADB twin of this test).
        join = when_running("sleep 61", sshd.stop)
        try:
            with pytest.raises(ConnectionFailed, match="connection lost while running 'sleep 61'"):
                transport.run(["sleep", "61"], timeout=30)
        finally:
            join()
