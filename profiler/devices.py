"""Device profiles: how to reach a device and how to time models on it.

Built-in profiles cover the usual fleet; users add or change profiles in ``devices.toml`` (in the working folder
or the user config folder), and command-line flags override any field. One decoder validates all three sources,
so an error always names the source, the device and the field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomllib

from supernet.errors import OFAProfileError
from supernet.quantize import PRECISIONS

__all__ = ["BUILTIN_PROFILES", "DeviceError", "DeviceProfile", "config_paths", "load_profiles", "resolve_device"]

TRANSPORTS = ("local", "ssh", "adb")
RUNTIMES = ("onnxruntime", "tflite", "torch", "benchmark_model")
# Per runtime: the provider it takes when a profile switches to it without naming one, and the providers it has
# (None: any ONNX Runtime execution provider name, which the device's build decides).
RUNTIME_PROVIDERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "onnxruntime": ("CPU", None),
    "tflite": ("xnnpack", ("xnnpack", "gpu", "none")),
    "torch": ("cpu", ("cpu", "cuda")),
    "benchmark_model": ("xnnpack", ("cpu", "xnnpack", "gpu", "nnapi")),
}


class DeviceError(OFAProfileError, ValueError):
    """A device profile that cannot be used; the message names its source, device and field."""

    exit_code = 2


@dataclass(frozen=True)
class DeviceProfile:
    """Everything needed to reach one device and time models on it.

    Args:
        name: Profile name, as given to ``--device``.
        transport: ``local``, ``ssh`` or ``adb``.
        runtime: ``onnxruntime``, ``tflite`` (LiteRT), ``torch`` (Python agent) or ``benchmark_model``
            (TF-Lite's Android binary, no Python on the device).
        provider: ONNX Runtime execution provider (``CPU``, ``CUDA``, ``TensorRT``, ``OpenVINO``, ``VitisAI``),
            TF-Lite delegate (``xnnpack``, ``gpu``, ``nnapi``) or torch device (``cpu``, ``cuda``).
        threads: Intra-op threads.
        affinity: CPUs to pin to: a list of CPU ids, ``"fast"`` (the cores with the highest max frequency)
            or empty for no pinning.
        batch: Batch size of the timed inputs.
        precision: ``fp32``, or ``int8`` for statically quantized models (ONNX Runtime, TF-Lite;
            ``supernet.quantize``).
        hosts: SSH hosts (several for a table sharded across identical devices).
        known_hosts: SSH known_hosts file the host key is checked against (empty: ``~/.ssh/known_hosts``).
        serials: ADB serials or ``host:port`` (several for sharding).
        adb_key: ADB private key, created on first use (empty: ``~/.android/adbkey``, the one ``adb`` uses).
    """

    name: str
    transport: str = "local"
    runtime: str = "onnxruntime"
    provider: str = "CPU"
    threads: int = 1
    affinity: str | list[int] = ""
    batch: int = 1
    precision: str = "fp32"
    hosts: list[str] = field(default_factory=list)
    port: int = 22
    user: str = ""
    key: str = ""
    known_hosts: str = ""
    serials: list[str] = field(default_factory=list)
    adb_key: str = ""
    python: str = "python3"
    remote_dir: str = ""
    benchmark_model: str = "/data/local/tmp/benchmark_model"
    description: str = ""

    @property
    def model_format(self) -> str:
        """The exported file format this profile's runtime loads."""
        if self.runtime == "torch":
            return "torchscript"
        return "tflite" if self.runtime in ("tflite", "benchmark_model") else "onnx"

    @property
    def precision_suffix(self) -> str:
        """What the names of this profile's files end with: nothing for fp32, ``_int8`` for int8, so that a table,
        a subnet CSV or a report of one precision never resumes or replaces one of another."""
        return "" if self.precision == "fp32" else f"_{self.precision}"

    @property
    def targets(self) -> list[str]:
        """The device addresses a run spreads over: hosts for SSH, serials for ADB, this machine otherwise."""
        if self.transport == "ssh":
            return list(self.hosts)
        if self.transport == "adb":
            return list(self.serials)
        return ["localhost"]

    def describe(self) -> str:
        where = {
            "ssh": ", ".join(self.hosts) or "(no host)",
            "adb": ", ".join(self.serials) or "(first device)",
            "local": "this machine",
        }[self.transport]
        precision = "" if self.precision == "fp32" else f", {self.precision}"
        return (
            f"{self.name:<10} via {self.transport:<5} {self.runtime}/{self.provider}, {self.threads} thread(s), "
            f"batch {self.batch}{precision}, on {where}" + (f"  ({self.description})" if self.description else "")
        )


_TYPES: dict[str, tuple[type, ...]] = {
    f.name: (int,)
    if f.type == "int"
    else (str,)
    if f.type == "str"
    else (list,)
    if f.type.startswith("list")
    else (str, list)
    for f in dataclasses.fields(DeviceProfile)
}


# Device names and providers become parts of file names (tables, sidecars, work folders): a safe set only, so
# a value such as "../../x" can never point a write outside --out.
_FILE_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def _check(profile: DeviceProfile, source: str) -> DeviceProfile:
    where = f"{source}: device {profile.name!r}"
    for name in ("name", "provider"):
        if not _FILE_NAME_PART.fullmatch(getattr(profile, name)):
            raise DeviceError(f"{where}: {name} = {getattr(profile, name)!r} becomes part of file names; use letters, "
                              f"digits and . _ + - (at most 64, starting with a letter or digit)")
    if profile.transport not in TRANSPORTS:
        raise DeviceError(f"{where}: transport = {profile.transport!r}; expected one of {', '.join(TRANSPORTS)}")
    if profile.runtime not in RUNTIMES:
        raise DeviceError(f"{where}: runtime = {profile.runtime!r}; expected one of {', '.join(RUNTIMES)}")
    has = RUNTIME_PROVIDERS[profile.runtime][1]
    if has is not None and profile.provider.lower() not in has:
        raise DeviceError(f"{where}: provider = {profile.provider!r} is not one runtime {profile.runtime} has; "
                          f"expected one of {', '.join(has)}")
    if profile.precision not in PRECISIONS:
        raise DeviceError(f"{where}: precision = {profile.precision!r}; expected one of {', '.join(PRECISIONS)}")
    if profile.precision != "fp32" and profile.runtime not in ("onnxruntime", "tflite"):
        raise DeviceError(f"{where}: precision {profile.precision} is measured with ONNX Runtime and TF-Lite, not "
                          f"{profile.runtime}; use --runtime onnxruntime or tflite, or --precision fp32")
    if profile.runtime == "benchmark_model" and profile.transport != "adb":
        raise DeviceError(f'{where}: runtime benchmark_model runs on Android phones; use transport = "adb"')
    for name, most in (("threads", 1024), ("batch", 4096), ("port", 65535)):
        if not 1 <= getattr(profile, name) <= most:
            raise DeviceError(f"{where}: {name} = {getattr(profile, name)} must be from 1 to {most}")
    if isinstance(profile.affinity, str) and profile.affinity not in ("", "fast"):
        raise DeviceError(f'{where}: affinity = {profile.affinity!r}; expected "fast", a list of CPU ids, or ""')
    if isinstance(profile.affinity, list) and not all(isinstance(c, int) and c >= 0 for c in profile.affinity):
        raise DeviceError(f"{where}: affinity must list CPU ids (ints >= 0), got {profile.affinity!r}")
    return profile


def check_precision_of(profile: DeviceProfile, stated: str, source: str) -> None:
    """A table or latency model measured in one precision (``stated``: its ``precision``) says nothing about
    another (int8 speeds ops up unevenly): refused, naming both."""
    if stated != profile.precision:
        raise DeviceError(f"{source} was measured in {stated}; device {profile.name} measures {profile.precision}",
                          f"give --precision {stated}, or a {profile.precision} table or model")


def _profile_from(
    name: str, fields: Mapping[str, Any], source: str, base: DeviceProfile | None = None
) -> DeviceProfile:
    """A profile from a mapping of fields, on top of ``base`` (a built-in of the same name) when given."""
    if not isinstance(fields, Mapping):
        raise DeviceError(f"{source}: device {name!r} must be a table of fields, got {type(fields).__name__}")
    values = dataclasses.asdict(base) if base else {"name": name}
    for key, value in fields.items():
        if key not in _TYPES or key == "name":
            allowed = ", ".join(k for k in _TYPES if k != "name")
            raise DeviceError(f"{source}: device {name!r} has unknown field {key!r}; known fields: {allowed}")
        if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
            expected = " or ".join(t.__name__ for t in _TYPES[key])
            raise DeviceError(f"{source}: device {name!r} field {key!r} = {value!r} should be {expected}")
        values[key] = value
    switched = "runtime" in fields and (base is None or fields["runtime"] != base.runtime)
    if switched and "provider" not in fields and fields["runtime"] in RUNTIME_PROVIDERS:
        values["provider"] = RUNTIME_PROVIDERS[fields["runtime"]][0]  # the base's provider is another runtime's
    values["name"] = name
    return _check(DeviceProfile(**values), source)


BUILTIN_PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile("local", description="this machine's CPU with ONNX Runtime"),
        DeviceProfile(
            "pixel1",
            transport="adb",
            runtime="benchmark_model",
            provider="xnnpack",
            affinity="fast",
            remote_dir="/data/local/tmp/ofa-profile",
            description="Android phone, TF-Lite benchmark_model, 1 thread on the fast cores",
        ),
        DeviceProfile(
            "jetson",
            transport="ssh",
            provider="TensorRT",
            hosts=["jetson.local"],
            description="NVIDIA Jetson over SSH, ONNX Runtime with TensorRT (CUDA as fallback)",
        ),
        DeviceProfile(
            "gpu",
            transport="ssh",
            runtime="torch",
            provider="cuda",
            batch=8,
            hosts=["gpu-host"],
            description="a CUDA GPU host over SSH, torch timed with synchronisation",
        ),
        DeviceProfile(
            "fpga",
            transport="ssh",
            provider="VitisAI",
            hosts=["fpga-host"],
            description="an FPGA host over SSH, ONNX Runtime with the VitisAI execution provider",
        ),
    )
}


def config_paths(cwd: Path | None = None) -> list[Path]:
    """``devices.toml`` locations, lowest priority first: the user config folder, then the working folder."""
    return [Path(platformdirs.user_config_dir("ofa-profile")) / "devices.toml", (cwd or Path.cwd()) / "devices.toml"]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DeviceError(f"{path}: not a UTF-8 text file ({err.reason})", "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise DeviceError(f"{path}: not valid TOML ({err}); see `ofa-profile --list-devices` for the format") from None
    devices = data.get("devices", {})
    extra = sorted(set(data) - {"devices"})
    if extra or not isinstance(devices, dict):
        raise DeviceError(f"{path}: expected [devices.NAME] tables only, found {extra or 'devices = ...'}")
    return devices


def load_profiles(paths: Iterable[Path] | None = None) -> dict[str, DeviceProfile]:
    """Built-in profiles with those of the TOML files applied on top (later files win, field by field)."""
    profiles = dict(BUILTIN_PROFILES)
    for path in config_paths() if paths is None else paths:
        if path.is_file():
            for name, fields in _read_toml(path).items():
                profiles[name] = _profile_from(name, fields, str(path), profiles.get(name))
    return profiles


def resolve_device(
    name: str, overrides: Mapping[str, Any] | None = None, profiles: Mapping[str, DeviceProfile] | None = None
) -> DeviceProfile:
    """The named profile with command-line overrides applied (``None`` values are ignored)."""
    profiles = load_profiles() if profiles is None else profiles
    if name not in profiles:
        raise DeviceError(
            f"unknown device {name!r}; known devices: {', '.join(sorted(profiles))}. "
            f"Add your own in devices.toml (see `ofa-profile --list-devices`)."
        )
    given = {k: v for k, v in (overrides or {}).items() if v is not None and v != []}
    return _profile_from(name, given, "command line", profiles[name]) if given else profiles[name]
