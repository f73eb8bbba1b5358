"""A real OpenSSH sshd on a loopback port, with keys made by ssh-keygen, every option explicit."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.waiting import wait_until

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, process: subprocess.Popen | None = None) -> None:
    """Poll until something accepts on ``port``; fail with the process's output if it died first."""

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    died = (lambda: process.poll() is not None) if process is not None else None
    try:
        if not wait_until(listening, f"a listener on 127.0.0.1:{port}", timeout_s=10, interval_s=0.02, stop=died):
            raise RuntimeError(f"peer exited with {process.returncode} before listening on {port}")
    except AssertionError as err:
        raise RuntimeError(str(err)) from None


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """Make a key pair with ssh-keygen; returns the private key's path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "ofa-test", "-f", str(path)], check=True, timeout=30
    )
    return path


def known_hosts_line(port: int, host_key: Path) -> str:
    """The known_hosts line paramiko expects for a non-22 port."""
    kind, blob = Path(f"{host_key}.pub").read_text().split()[:2]
    return f"[127.0.0.1]:{port} {kind} {blob}\n"


@dataclass
class Sshd:
    """A running sshd and the files a client needs to reach it."""

    root: Path
    port: int
    host_key: Path
    client_key: Path
    known_hosts: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @classmethod
    def create(cls, root: Path) -> Sshd:
        """Make keys and files under ``root``; start nothing yet."""
        root.mkdir(parents=True, exist_ok=True)
        host_key = keygen(root / "host_key")
        client_key = keygen(root / "client_key")
        shutil.copy(f"{client_key}.pub", root / "authorized_keys")
        port = free_port()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(known_hosts_line(port, host_key))
        return cls(root, port, host_key, client_key, known_hosts)

    @property
    def user(self) -> str:
        return getpass.getuser()

    def start(self) -> None:
        """Start sshd in the foreground (-D) and poll until it accepts."""
        # sshd refuses to start as root without its privilege-separation folder.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        options = {
            "HostKey": self.host_key,
            "Port": self.port,
            "ListenAddress": "127.0.0.1",
            "AuthorizedKeysFile": self.root / "authorized_keys",
            "PidFile": self.root / "sshd.pid",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "StrictModes": "no",
            "UsePAM": "no",
            "PermitRootLogin": "prohibit-password",
            "Subsystem": "sftp internal-sftp",
        }
        argv = [str(SSHD), "-D", "-e", "-f", "/dev/null"]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 - the process owns it until stop()
        self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_for_port(self.port, process=self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError((self.root / "sshd.log").read_text()) from None

    def stop(self) -> None:
        """Kill sshd and every session it started (as a power cut would), and wait for them."""
        if self.process is None:
            return
        pids = [self.process.pid, *_descendants(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        self.process.wait(timeout=10)
        self.process = None
        wait_until(lambda: not any(_alive(pid) for pid in pids), f"sshd processes {pids} to die after SIGKILL",
                   timeout_s=5)


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid``, found through /proc (sshd's sessions call setsid, so no group kill)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
