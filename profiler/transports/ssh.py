"""SSH with paramiko: for boards that run Linux and Python (Raspberry Pi, Jetson, x86 hosts, FPGA hosts).

Host keys are verified against a known_hosts file and unknown hosts are refused; ``trust_host`` is the one
explicit step that enrols a new host, and it prints the fingerprint it trusts.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import select
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

import paramiko

from profiler.transports.base import Transport
from profiler.transports.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    HostKeyError,
    TransferFailed,
)
from profiler.transports.result import Result
from supernet.errors import run_command

__all__ = ["SshTransport", "fingerprint", "trust_host"]

_DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint, ``SHA256:...``, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_entry(host: str, port: int) -> str:
    """The name a known_hosts line uses: bare for port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    """RejectPolicy, with a message that shows the fingerprint and the command to trust it."""

    def __init__(self, device: str, host: str, port: int, known_hosts: Path) -> None:
        self._device, self._host, self._port, self._known_hosts = device, host, port, known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            self._device,
            f"unknown host key {key.get_name()} {fingerprint(key)} (not in {self._known_hosts})",
            f"check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then "
            f"trust it: python -m profiler.transports.ssh trust {self._host} --port {self._port} "
            f"--known-hosts {self._known_hosts}",
        )


class SshTransport(Transport):
    """Run commands over SSH and move files over SFTP.

    Args:
        host: Host name or address.
        port: SSH port.
        user: Login name; None uses paramiko's default (the local user).
        key_filename: Private key file; None tries the SSH agent.
        known_hosts: known_hosts file to verify the host against.
        connect_timeout: Seconds to wait for TCP, banner and authentication each.
    """

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_filename: Path | str | None = None,
        known_hosts: Path | str = _DEFAULT_KNOWN_HOSTS,
        connect_timeout: float = 10.0,
    ) -> None:
        who = f"{user}@" if user else ""
        super().__init__(f"ssh://{who}{host}:{port}")
        self.host, self.port, self.user = host, port, user
        self.key_filename = Path(key_filename).expanduser() if key_filename else None
        self.known_hosts = Path(known_hosts).expanduser()
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _open(self) -> None:
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(_RefuseUnknownHost(self.device, self.host, self.port, self.known_hosts))
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_filename) if self.key_filename else None,
                allow_agent=self.key_filename is None,
                look_for_keys=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                self.device,
                f"host key CHANGED: got {exc.key.get_name()} {fingerprint(exc.key)}, "
                f"{self.known_hosts} has {fingerprint(exc.expected_key)}. This may be an attack, "
                "or the device was reinstalled",
                f"if the device was reinstalled, ssh-keygen -R '{_host_entry(self.host, self.port)}' "
                f"-f {self.known_hosts}, then trust the new key",
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            key = self.key_filename or "the SSH agent's keys"
            raise AuthenticationFailed(
                self.device,
                f"the server refused {key} ({exc})",
                "add the matching public key to ~/.ssh/authorized_keys on the device, or pass key_filename",
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise ConnectionFailed(
                self.device,
                f"could not connect: {exc}",
                "check the device is on, sshd runs there, and host and port are right",
            ) from exc
        transport = client.get_transport()
        if transport is not None:
            # Every command is a few small packets each way; with Nagle's algorithm each waits for the device's
            # delayed ACK (a third of an exec's 0.13 s over loopback).
            with contextlib.suppress(OSError):
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client

    def _abort(self) -> None:
        # Closing the connection ends the running command's session; the agent, orphaned, stops by itself.
        client = self._client
        if client is not None:
            client.close()

    def _close(self) -> None:
        # A connection that dropped can fail to close (EOFError from paramiko): it is gone either way.
        sftp, client, self._sftp, self._client = self._sftp, self._client, None, None
        for resource in (sftp, client):
            if resource is not None:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    resource.close()

    def _transport(self) -> paramiko.Transport:
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            self.close()
            raise ConnectionFailed(self.device, "the SSH connection is gone", "check the device, then rerun")
        return transport

    def _execute(self, command: str, timeout: float) -> Result:
        try:
            channel = self._transport().open_session(timeout=self.connect_timeout)
            channel.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise ConnectionFailed(self.device, f"could not start {command!r}: {exc}") from exc
        stdout, stderr = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        # NOTE: recv_exit_status() has no timeout; poll exit_status_ready() and drain output as it comes.
        with channel:
            while True:
                _drain(channel, stdout, stderr)
                if channel.exit_status_ready() and channel.eof_received:
                    break
                if not channel.get_transport().is_active() or (channel.closed and not channel.exit_status_ready()):
                    self.close()
                    raise ConnectionFailed(
                        self.device,
                        f"connection lost while running {command!r}\n"
                        + Result(self.device, command, _text(stdout), _text(stderr), -1).tail(),
                        "the device went away; rerun when it is back (agents resume from their results file)",
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(command, timeout, _text(stdout), _text(stderr))
                if channel.eof_received:  # the channel stays readable after EOF: select would spin until the status
                    channel.status_event.wait(min(remaining, 0.5))
                else:
                    select.select([channel], [], [], min(remaining, 0.5))
            _drain(channel, stdout, stderr)
            exited = channel.exit_status
        return Result(self.device, command, _text(stdout), _text(stderr), exited)

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(self._transport())
        return self._sftp

    def _upload(self, local: Path, remote: str, timeout: float) -> None:
        try:
            sftp = self._sftp_client()
            sftp.get_channel().settimeout(timeout)
            sftp.put(str(local), remote, confirm=True)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransferFailed(
                self.device,
                f"upload of {local} to {remote} failed: {exc}",
                "check the folder exists on the device",
            ) from exc

    def _download(self, remote: str, local: Path, timeout: float) -> None:
        try:
            sftp = self._sftp_client()
            sftp.get_channel().settimeout(timeout)
            sftp.get(remote, str(local))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransferFailed(self.device, f"download of {remote} to {local} failed: {exc}") from exc


def _drain(channel: paramiko.Channel, stdout: bytearray, stderr: bytearray) -> None:
    while channel.recv_ready():
        stdout += channel.recv(1 << 16)
    while channel.recv_stderr_ready():
        stderr += channel.recv_stderr(1 << 16)


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def trust_host(
    host: str,
    *,
    port: int = 22,
    known_hosts: Path | str = _DEFAULT_KNOWN_HOSTS,
    timeout: float = 10.0,
    out: TextIO | None = None,
) -> str:
    """Enrol a host: fetch its key, print the fingerprint, and add it to ``known_hosts``.

    This is the explicit step RejectPolicy asks for; compare the printed fingerprint with the one the device
    shows (``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``).

    Returns:
        The fingerprint that was trusted.

    Raises:
        HostKeyError: ``known_hosts`` already has a different key for this host.
        ConnectionFailed: The host could not be reached.
    """
    device = f"ssh://{host}:{port}"
    known_hosts = Path(known_hosts).expanduser()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            paramiko.Transport(sock) as link,
        ):
            link.start_client(timeout=timeout)
            key = link.get_remote_server_key()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise ConnectionFailed(device, f"could not fetch the host key: {exc}") from exc
    entry = _host_entry(host, port)
    keys = paramiko.HostKeys(str(known_hosts)) if known_hosts.is_file() else paramiko.HostKeys()
    known = keys.lookup(entry) or {}
    old = known.get(key.get_name())
    if old is not None and old != key:
        raise HostKeyError(
            device,
            f"{known_hosts} already holds a different {key.get_name()} key ({fingerprint(old)}) "
            f"than the host offers ({fingerprint(key)})",
            f"if the device was reinstalled, ssh-keygen -R '{entry}' -f {known_hosts}, then trust it again",
        )
    print(f"trusting {entry} {key.get_name()} {fingerprint(key)} in {known_hosts}", file=out or sys.stderr)
    if old is None:
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        keys.add(entry, key.get_name(), key)
        keys.save(str(known_hosts))
    return fingerprint(key)


def main(argv: list[str] | None = None) -> int:
    """``python -m profiler.transports.ssh trust HOST [--port N] [--known-hosts FILE]``, inside the project's one
    error boundary (:func:`~supernet.errors.run_command`)."""
    return run_command("python -m profiler.transports.ssh", _main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiler.transports.ssh", description=trust_host.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    trust = commands.add_parser("trust", help="add a host's key to known_hosts, printing its fingerprint")
    trust.add_argument("host")
    trust.add_argument("--port", type=int, default=22)
    trust.add_argument("--known-hosts", default=str(_DEFAULT_KNOWN_HOSTS))
    trust.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    trust_host(args.host, port=args.port, known_hosts=args.known_hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
