"""`make demo` keeps working: its entry point runs and reports what it measured."""

import warnings

from supernet.demo import main


def test_demo_runs(capsys):
    """The demo prints the MACs table, the subnet check and an ONNX Runtime timing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's notice about the TorchScript exporter
        assert main(["--archs", "3"]) == 0
    out = capsys.readouterr().out
    assert "MMACs" in out
    assert "extracted subnet vs elastic forward: max |diff| = " in out
    assert "ONNX Runtime (CPU, 1 thread): median" in out
