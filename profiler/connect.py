"""Open the transport a device profile names, for one of its targets (a host or a serial)."""

from __future__ import annotations

from typing import Any

from profiler.devices import DeviceProfile
from profiler.transports.base import Transport
from profiler.transports.local import LocalTransport

__all__ = ["open_transport"]


def open_transport(profile: DeviceProfile, target: str) -> Transport:
    """A transport to ``target`` (not yet connected: transports connect on first use)."""
    if profile.transport == "local":
        return LocalTransport()
    options: dict[str, Any] = {}
    if profile.transport == "ssh":
        from profiler.transports.ssh import SshTransport

        if profile.known_hosts:
            options["known_hosts"] = profile.known_hosts
        return SshTransport(
            target, port=profile.port, user=profile.user or None, key_filename=profile.key or None, **options
        )
    from profiler.transports.adb import AdbTransport

    if profile.adb_key:
        options["key_path"] = profile.adb_key
    return AdbTransport(target, **options)
