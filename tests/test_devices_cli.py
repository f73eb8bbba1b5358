"""Device profiles (built-ins, devices.toml, flag overrides) and the ofa-profile command's errors."""

from __future__ import annotations

import pandas as pd
import pytest

from predictors.table_io import read_table
from profiler.cli import main
from profiler.devices import BUILTIN_PROFILES, DeviceError, load_profiles, resolve_device
from tests.paths import NOTE10


def test_builtin_profiles_cover_the_fleet():
    """local, pixel1 (ADB + benchmark_model), jetson (SSH + TensorRT), a GPU host and an FPGA host."""
    assert {"local", "pixel1", "jetson", "gpu", "fpga"} <= set(BUILTIN_PROFILES)
    assert BUILTIN_PROFILES["pixel1"].transport == "adb"
    assert BUILTIN_PROFILES["pixel1"].model_format == "tflite"
    assert BUILTIN_PROFILES["jetson"].provider == "TensorRT"
    assert BUILTIN_PROFILES["fpga"].provider == "VitisAI"
    assert BUILTIN_PROFILES["gpu"].runtime == "torch" and BUILTIN_PROFILES["gpu"].batch > 1


def test_devices_toml_adds_and_changes_profiles(tmp_path):
    """A user file adds a device and changes one field of a built-in, keeping its other fields."""
    path = tmp_path / "devices.toml"
    path.write_text('[devices.rpi4]\ntransport = "ssh"\nhosts = ["rpi4.lan"]\nthreads = 4\naffinity = [0, 1, 2, 3]\n'
                    '\n[devices.jetson]\nhosts = ["orin-01"]\n')
    profiles = load_profiles([path])
    assert profiles["rpi4"].threads == 4 and profiles["rpi4"].affinity == [0, 1, 2, 3]
    assert profiles["jetson"].hosts == ["orin-01"] and profiles["jetson"].provider == "TensorRT"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[devices.x]\ntransport = "usb"\n', "device 'x': transport = 'usb'; expected one of local, ssh, adb"),
        ('[devices.x]\nthreds = 2\n', "device 'x' has unknown field 'threds'; known fields: transport"),
        ('[devices.x]\nthreads = "4"\n', "device 'x' field 'threads' = '4' should be int"),
        ('[devices.x]\nthreads = 0\n', "threads = 0 must be from 1 to 1024"),
        ('[devices.x]\nthreads = 1000000\n', "threads = 1000000 must be from 1 to 1024"),
        ('[devices.x]\nruntime = "benchmark_model"\n', "benchmark_model runs on Android phones"),
        ('[devices.x\n', "not valid TOML"),
        ('name = "x"\n', "expected [devices.NAME] tables only"),
        ('[devices."../../x"]\n', "name = '../../x' becomes part of file names"),
        ('[devices.x]\nprovider = "../CPU"\n', "provider = '../CPU' becomes part of file names"),
    ],
)
def test_bad_devices_toml_names_the_field(tmp_path, text, message):
    """Each mistake in devices.toml raises one DeviceError naming the file, the device and the field."""
    path = tmp_path / "devices.toml"
    path.write_text(text)
    with pytest.raises(DeviceError) as excinfo:
        load_profiles([path])
    assert message in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_flags_override_profile_fields():
    profile = resolve_device("jetson", {"hosts": ["10.0.0.7"], "threads": 2, "user": None},
                             profiles=BUILTIN_PROFILES)
    assert profile.hosts == ["10.0.0.7"] and profile.threads == 2 and profile.provider == "TensorRT"
    with pytest.raises(DeviceError, match=r"command line: device 'jetson'.*threads = 0"):
        resolve_device("jetson", {"threads": 0}, profiles=BUILTIN_PROFILES)


def test_unknown_device_lists_known_ones(capsys):
    assert main(["--device", "pixel9"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'pixel9'; known devices: fpga, gpu, jetson, local, pixel1" in err


def test_list_devices(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--list-devices"]) == 0
    out = capsys.readouterr().out
    assert "pixel1" in out and "via adb" in out and "benchmark_model" in out


def test_bad_resolutions_is_a_usage_error(capsys, tmp_path):
    assert main(["--device", "local", "--width", "1.2", "--resolutions", "128", "--out", str(tmp_path)]) == 2
    assert "not in the w1.2 list 160..224 step 4" in capsys.readouterr().err


def test_ssh_device_without_host_says_what_to_give(capsys, tmp_path):
    assert main(["--device", "local", "--via", "ssh", "--out", str(tmp_path)]) == 2
    assert "give --host or set it in devices.toml" in capsys.readouterr().err


def test_convert_both_ways(tmp_path, capsys):
    """The shipped Note10 CSV converts to OFA YAML and back without losing a row or a value."""
    shipped = NOTE10
    assert main(["convert", str(shipped), str(tmp_path / "yaml")]) == 0
    assert sorted(p.name for p in (tmp_path / "yaml").iterdir()) == [
        f"{r}_lookup_table.yaml" for r in (160, 176, 192, 208, 224)]
    assert main(["convert", str(tmp_path / "yaml"), str(tmp_path / "back.csv")]) == 0
    original = read_table(shipped)
    back = read_table(tmp_path / "back.csv")
    assert {(r.key, r.resolution, r.mean_ms, r.count) for r in original.rows} == {
        (r.key, r.resolution, r.mean_ms, r.count) for r in back.rows}
    assert len(pd.read_csv(tmp_path / "back.csv")) == 5 * 96


def test_convert_never_replaces_a_table_or_yaml_files_silently(tmp_path, capsys):
    """Issue 25: `ofa-profile convert yaml_dir/ T.csv` replaced a measured table and its sidecar."""
    shipped = NOTE10
    yaml_dir = tmp_path / "yaml"
    assert main(["convert", str(shipped), str(yaml_dir)]) == 0
    assert main(["convert", str(shipped), str(yaml_dir)]) == 2
    assert "160_lookup_table.yaml exists (and 4 more); give another target, or --force" in capsys.readouterr().err
    measured = tmp_path / "measured.csv"
    measured.write_text("a measured table\n")
    assert main(["convert", str(yaml_dir), str(measured)]) == 2
    assert f"{measured} exists" in capsys.readouterr().err and measured.read_text() == "a measured table\n"
    assert main(["convert", str(yaml_dir), str(measured), "--force"]) == 0
    assert len(read_table(measured).rows) == 5 * 96


def test_a_provider_that_would_leave_the_output_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    """Issue 25: --provider "../../victim/important" truncated a table elsewhere to its header."""
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "a" / "b"
    assert main(["--device", "local", "--provider", "../../victim/important", "--out", str(out)]) == 2
    assert "provider = '../../victim/important' becomes part of file names" in capsys.readouterr().err
    assert not list(victim.iterdir()) and not out.exists()


def test_switching_the_runtime_takes_its_default_provider_and_a_foreign_provider_is_refused(tmp_path):
    """Issue 24: `--device local --runtime tflite` kept ONNX Runtime's provider CPU, and every row failed with
    "the reference workload failed: no result" (the agent had said: unknown TF-Lite delegate 'cpu')."""
    assert resolve_device("local", {"runtime": "tflite"}, profiles=BUILTIN_PROFILES).provider == "xnnpack"
    assert resolve_device("local", {"runtime": "torch"}, profiles=BUILTIN_PROFILES).provider == "cpu"
    gpu = resolve_device("local", {"runtime": "tflite", "provider": "gpu"}, profiles=BUILTIN_PROFILES)
    assert gpu.provider == "gpu"
    with pytest.raises(DeviceError, match="provider = 'CUDA' is not one runtime tflite has; expected one of xnnpack"):
        resolve_device("local", {"runtime": "tflite", "provider": "CUDA"}, profiles=BUILTIN_PROFILES)
    toml = tmp_path / "devices.toml"
    toml.write_text('[devices.board]\nruntime = "torch"\n')
    assert load_profiles([toml])["board"].provider == "cpu"
