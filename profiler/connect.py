"""Open the transport a device profile names, for one of its targets (a host or a serial)."""

from __future__ import annotations

from profiler.devices import DeviceProfile
from profiler.transports.base import Transport
from profiler.transports.local import LocalTransport

__all__ = ["open_transport"]


def open_transport(profile: DeviceProfile, target: str) -> Transport:
    """A transport to ``target`` (not yet connected: transports connect on first use)."""
    if profile.transport == "local":
        return LocalTransport()
    if profile.transport == "ssh":
        from profiler.transports.ssh import SSHTransport

        return SSHTransport(target, port=profile.port, user=profile.user or None, key_filename=profile.key or None)
    from profiler.transports.adb import ADBTransport

    return ADBTransport(target)
