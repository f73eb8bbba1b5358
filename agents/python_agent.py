#!/usr/bin/env python3
"""Measure model latency on this device: ``python3 python_agent.py MANIFEST.json RESULTS.jsonl``.

A host pushes this one file to a device and runs it. It needs only the standard library, numpy and whichever
runtime the device has (ONNX Runtime, LiteRT / tflite_runtime, torch), and imports nothing from ofa-profile,
so it runs on boards with Python 3.8 and nothing else installed.

The manifest (JSON) holds the settings and the models; paths are relative to the manifest's folder::

    {"threads": 1, "affinity": [4, 5], "warmup": 10, "min_count": 50, "min_time_s": 1.0,
     "provider": "CPU",
     "models": [{"name": "block0", "path": "block0.onnx", "inputs": [[1, 16, 56, 56]]},
                {"name": "block0_tfl", "path": "block0.tflite", "runtime": "tflite", "provider": "xnnpack"}]}

Optional settings: ``min_sample_ms`` (each sample times enough back-to-back runs to last this long, and is
their per-run mean; default 0: one run per sample) and ``evict_cache_mb`` (write a buffer this large before
each run, so that runs start with cold caches; default 0). Per ONNX model, ``"dim_overrides": {"height": 224,
"width": 224}`` fixes symbolic input dimensions by name when the session is made, so one file serves many input
sizes at the speed of a static model.

Latency is the steady state of back-to-back runs after a warm-up, as ``benchmark_model`` and
``onnxruntime_perf_test`` report it. Drift-proof timing restates it at a device state and must not change it: with
``"reference": {"name": ..., "path": ..., "inputs": ...}`` every model is first timed alone in a plain loop of
``steady_min_count`` samples (default 10; the record's ``steady_samples_ms``), then in alternating blocks of
``block_ms`` (default 25) with that fixed reference workload: reference, model, reference, ..., reference. Each
block's first ``settle_ms`` (default 0) of runs are discarded (kept as ``settle_samples_ms``), so a block can be
made to start in the steady state. The device's speed moves by several percent within minutes, but both sides of
a ratio move together, so each record keeps, beside the absolute samples, the reference's samples and one ratio
per model sample (the sample over the mean of the reference medians of the blocks just before and after it). The
host compares the blocked samples with the plain loop's and lengthens the blocks where they disagree. Python's
garbage collector is off while a model is timed, as ``timeit`` has it.

In-network unit times: a model with ``"profile_nodes": true`` (ONNX Runtime only) is, after its timing, run
again under ONNX Runtime's profiler, ``profile_runs`` runs (default 40) shared among ``profile_sessions``
sessions loaded afresh (default 2), and the record gets ``node_times_us``: ``[name, op_type, us]`` per node in
execution order, the mean over sessions of each node's median. Profiling slows the run, so only the shares are
meant to be used.

``runtime`` (per model or for all) is ``onnxruntime``, ``tflite`` or ``torch`` (TorchScript); it defaults from
the file extension. ``provider`` is an ONNX Runtime execution provider (``CPU``, ``CUDA``, ``TensorRT``,
``OpenVINO``, ``VitisAI``...), a TF-Lite delegate (``xnnpack``, ``gpu``, ``none``) or a torch device (``cpu``,
``cuda``).

Each model appends one JSON line to the results file, flushed and fsynced: raw samples in ms and their summary,
or an error record. An environment record (CPU, frequencies, governors, temperatures, runtime versions) opens
and closes each run. Models already in the results file are skipped, so a run that was cut off continues where
it stopped. Exit status: 0 when every model was tried, 2 for a bad manifest, 3 when another agent holds the
results file.
"""

import contextlib
import fcntl
import gc
import glob
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

AGENT_VERSION = 4
_EXTENSIONS = {".onnx": "onnxruntime", ".tflite": "tflite", ".pt": "torch", ".ptl": "torch"}
_DEFAULTS = {
    "threads": 1,
    "affinity": None,
    "warmup": 10,
    "min_count": 50,
    "min_time_s": 1.0,
    "evict_cache_mb": 0,
    "min_sample_ms": 0.0,
    "reference": None,
    "block_ms": 25.0,
    "settle_ms": 0.0,
    "steady_min_count": 10,
    "profile_runs": 40,
    "profile_sessions": 2,
}


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the field and the fix."""


class ModelError(RuntimeError):
    """One model cannot be measured; recorded, and the agent goes on."""


class Orphaned(BaseException):
    """Whoever started the agent went away (an SSH session closed, a host run was stopped): stop measuring.

    A ``BaseException``, so that the per-model ``except Exception`` does not record it as a model's failure.
    """


_PARENT = {"pid": None}  # type: Dict[str, Optional[int]]


def stop_if_orphaned() -> None:
    """Raise :class:`Orphaned` once this process's parent has changed: nobody waits for its results now."""
    if _PARENT["pid"] is not None and os.getppid() != _PARENT["pid"]:
        raise Orphaned()


# ---- device facts -----------------------------------------------------------------------------------------------


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _status_kb(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), None where there is no /proc."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(field + ":"):
            return _int_or_none(line.split()[1])
    return None


def _peak_kb() -> Optional[int]:
    peak = _status_kb("VmHWM")
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return peak


def _release_freed_memory() -> None:
    """Free earlier models' memory and hand it back to the OS (glibc's malloc_trim), so that resident memory
    before a model is what the process still uses: otherwise a model reusing freed pages shows no growth."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: growth past retained memory only
        pass


class PeakMemory(object):
    """How much a model raised the process's peak resident memory while it loaded and ran, in MB.

    Linux: the peak (VmHWM) is reset through /proc/self/clear_refs before the model loads, and its value after the
    runs is compared with the resident memory (VmRSS) before. Where the reset is refused, or /proc is missing
    (ru_maxrss), only growth past the process's earlier peak shows. Memory does not add up like time, so only
    whole models are meant to carry it.
    """

    growth_mb = None  # type: Optional[float]

    def __enter__(self) -> "PeakMemory":
        _release_freed_memory()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.how = "VmHWM after loading and the timed runs, over VmRSS before (peak reset by clear_refs)"
            self.before_kb = _status_kb("VmRSS")
        except OSError:
            self.how = "the process's peak resident memory after, over its peak before"
            self.before_kb = _peak_kb()
        return self

    def __exit__(self, *exc: Any) -> None:
        after = _peak_kb()
        if after is not None and self.before_kb is not None:
            self.growth_mb = max(0, after - self.before_kb) / 1024


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86 ``model name``, Arm ``Hardware``/``CPU part``), else platform."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "CPU part"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_frequencies(sysfs: str) -> List[Dict[str, Any]]:
    """Governor and current/max frequency (kHz) per core, where cpufreq is readable."""
    cores = []
    for folder in sorted(glob.glob(os.path.join(sysfs, "devices/system/cpu/cpu[0-9]*")), key=_cpu_index):
        freq = os.path.join(folder, "cpufreq")
        cores.append(
            {
                "cpu": _cpu_index(folder),
                "governor": _read(os.path.join(freq, "scaling_governor")),
                "cur_khz": _int_or_none(_read(os.path.join(freq, "scaling_cur_freq"))),
                "max_khz": _int_or_none(_read(os.path.join(freq, "cpuinfo_max_freq"))),
            }
        )
    return cores


def _cpu_index(folder: str) -> int:
    return int(os.path.basename(folder)[3:])


def thermal_zones(sysfs: str) -> List[Dict[str, Any]]:
    """Temperature in degrees C of each readable thermal zone."""
    zones = []
    for folder in sorted(glob.glob(os.path.join(sysfs, "class/thermal/thermal_zone*"))):
        millideg = _int_or_none(_read(os.path.join(folder, "temp")))
        if millideg is not None:
            zones.append(
                {
                    "zone": os.path.basename(folder),
                    "type": _read(os.path.join(folder, "type")),
                    "temp_c": millideg / 1000.0,
                }
            )
    return zones


_MODULES = {"onnxruntime": ["onnxruntime"], "tflite": ["ai_edge_litert", "tflite_runtime"], "torch": ["torch"]}


def runtime_versions(runtimes: List[str]) -> Dict[str, Optional[str]]:
    """Version of each module the manifest's runtimes use, None where missing.

    Only those: importing torch just to report its version costs seconds on a small board.
    """
    versions = {}  # type: Dict[str, Optional[str]]
    for module in sorted({module for runtime in runtimes for module in _MODULES[runtime]}):
        try:
            versions[module] = getattr(__import__(module), "__version__", "unknown")
        except Exception:  # a broken install counts as missing
            versions[module] = None
    return versions


def environment(phase: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The record that opens and closes a run: what the numbers were measured on, and in what state."""
    sysfs = os.environ.get("OFA_AGENT_SYSFS", "/sys")
    return {
        "type": "environment",
        "phase": phase,
        "agent_version": AGENT_VERSION,
        "time": time.time(),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpus": cpu_frequencies(sysfs),
        "thermal": thermal_zones(sysfs),
        "runtimes": runtime_versions([model["runtime"] for model in manifest["models"]]),
        "reference": (manifest["reference"] or {}).get("name"),
        "threads": manifest["threads"],
    }


# ---- runtimes: each returns (run_once, provider actually used, runtime version) ----------------------------------


def _random_inputs(shapes: List[List[int]], dtypes: List[Any]) -> List[Any]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for shape, dtype in zip(shapes, dtypes)]  # noqa: B905 - strict= needs 3.10


def _shapes(model: Dict[str, Any], declared: List[Any]) -> List[List[int]]:
    shapes = model.get("inputs") or declared
    for shape in shapes:
        if not all(isinstance(dim, (int, np.integer)) and dim > 0 for dim in shape):
            raise ModelError(
                'input shape {} is not static; give "inputs": [[1, 3, 224, 224]] for {}'.format(shape, model["name"])
            )
    if len(shapes) != len(declared):
        raise ModelError(
            "{} takes {} inputs but the manifest gives {} shapes".format(model["name"], len(declared), len(shapes))
        )
    return [[int(dim) for dim in shape] for shape in shapes]


def _ort_session(model: Dict[str, Any], path: str, threads: int, profile_prefix: Optional[str] = None):
    """An ONNX Runtime session on the model's provider, and random feeds of its input shapes."""
    import onnxruntime as ort

    provider = model["provider"] or "CPU"
    if not provider.endswith("ExecutionProvider"):
        provider += "ExecutionProvider"
    available = ort.get_available_providers()
    if provider not in available:
        raise ModelError(
            "execution provider {} is not in this onnxruntime build; available: {}".format(
                provider, ", ".join(available)
            )
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for dim, value in (model.get("dim_overrides") or {}).items():
        options.add_free_dimension_override_by_name(dim, int(value))
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=[provider])
    except Exception as exc:
        raise ModelError("onnxruntime cannot load {}: {}".format(path, exc)) from exc
    declared = session.get_inputs()
    shapes = _shapes(model, [list(item.shape) for item in declared])
    dtypes = [_ORT_TYPES.get(item.type, np.float32) for item in declared]
    feeds = dict(zip([item.name for item in declared], _random_inputs(shapes, dtypes)))  # noqa: B905 - strict= needs 3.10
    return session, feeds


def load_onnxruntime(model: Dict[str, Any], path: str, threads: int):
    import onnxruntime as ort

    session, feeds = _ort_session(model, path, threads)

    def run_once() -> None:
        session.run(None, feeds)

    return run_once, session.get_providers()[0], ort.__version__


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def _tflite_module():
    try:
        from ai_edge_litert import interpreter

        return interpreter, "ai_edge_litert"
    except ImportError:
        from tflite_runtime import interpreter  # the last option on old boards

        return interpreter, "tflite_runtime"


def load_tflite(model: Dict[str, Any], path: str, threads: int):
    try:
        module, name = _tflite_module()
    except ImportError as exc:
        raise ModelError("no TF-Lite runtime: pip install ai-edge-litert (or tflite-runtime on old boards)") from exc
    delegate = (model["provider"] or "xnnpack").lower()
    options = {"model_path": path, "num_threads": threads}  # type: Dict[str, Any]
    if delegate == "gpu":
        try:
            options["experimental_delegates"] = [module.load_delegate("libtensorflowlite_gpu_delegate.so")]
        except (OSError, ValueError) as exc:
            raise ModelError("TF-Lite GPU delegate not found on this device: {}".format(exc)) from exc
    elif delegate == "none":
        options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate != "xnnpack":
        raise ModelError("unknown TF-Lite delegate {!r}; use xnnpack, gpu or none".format(delegate))
    try:
        interp = module.Interpreter(**options)
        declared = interp.get_input_details()
        shapes = _shapes(model, [list(item["shape"]) for item in declared])
        for item, shape in zip(declared, shapes):  # noqa: B905 - strict= needs 3.10
            if list(item["shape"]) != shape:
                interp.resize_tensor_input(item["index"], shape)
        interp.allocate_tensors()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError("{} cannot load {}: {}".format(name, path, exc)) from exc
    inputs = _random_inputs(shapes, [item["dtype"] for item in declared])
    indices = [item["index"] for item in declared]

    def run_once() -> None:
        for index, value in zip(indices, inputs):  # noqa: B905 - strict= needs 3.10
            interp.set_tensor(index, value)
        interp.invoke()

    version = getattr(__import__(name), "__version__", "unknown")
    return run_once, delegate, "{} {}".format(name, version)


def load_torch(model: Dict[str, Any], path: str, threads: int):
    import torch

    device = (model["provider"] or "cpu").lower()
    if device not in ("cpu", "cuda"):
        raise ModelError("unknown torch device {!r}; use cpu or cuda".format(device))
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "CUDA requested but torch {} sees no CUDA device (built for CUDA {})".format(
                torch.__version__, torch.version.cuda
            )
        )
    torch.set_num_threads(threads)
    try:
        module = torch.jit.load(path, map_location=device).eval()
    except Exception as exc:
        raise ModelError("torch cannot load {} as TorchScript: {}".format(path, exc)) from exc
    if not model.get("inputs"):
        raise ModelError('torch models need "inputs": [[1, 3, 224, 224]] in the manifest for {}'.format(model["name"]))
    inputs = [
        torch.from_numpy(array).to(device)
        for array in _random_inputs(_shapes(model, model["inputs"]), [np.float32] * len(model["inputs"]))
    ]
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run_once() -> None:
        with torch.inference_mode():
            module(*inputs)
        synchronize()  # CUDA runs asynchronously: time the work, not its launch

    return run_once, device, torch.__version__


LOADERS = {"onnxruntime": load_onnxruntime, "tflite": load_tflite, "torch": load_torch}


# ---- measuring --------------------------------------------------------------------------------------------------


class Timer:
    """Times one loaded model: warm-up, then samples of enough back-to-back runs to last ``min_sample_ms``.

    Alone, a run of a few microseconds is mostly timer and dispatch jitter, hence ``min_sample_ms``.

    With ``evict_cache_mb``, a buffer of that size is written before each run (untimed), one run per sample, so
    every run starts with the model's weights out of cache, as they are inside a whole network that streams
    megabytes of weights.
    """

    def __init__(self, run_once: Callable[[], None], warmup: int, min_sample_ms: float, evict: Any) -> None:
        self.run_once = run_once
        self.evict = evict
        warm = []  # type: List[float]
        for _ in range(max(warmup, 1 if min_sample_ms and evict is None else 0)):
            begin = time.perf_counter_ns()
            run_once()
            warm.append((time.perf_counter_ns() - begin) / 1e6)
        self.run_ms = float(np.median(warm)) if warm else 0.0
        self.runs = 1
        if min_sample_ms and evict is None:
            self.runs = max(1, math.ceil(min_sample_ms / max(self.run_ms, 1e-6)))

    def sample(self) -> float:
        """One sample in ms per inference."""
        stop_if_orphaned()
        if self.evict is not None:
            self.evict += 1.0
        begin = time.perf_counter_ns()
        for _ in range(self.runs):
            self.run_once()
        return (time.perf_counter_ns() - begin) / 1e6 / self.runs

    def block(self, block_ms: float, settle_ms: float = 0.0) -> Tuple[List[float], List[float]]:
        """Samples lasting about ``block_ms`` in all (at least one), after ``settle_ms`` of discarded ones.

        Returns the kept samples and the discarded ones.
        """
        per_sample = max(self.run_ms * self.runs, 1e-6)
        settle = [self.sample() for _ in range(int(settle_ms / per_sample))]
        return [self.sample() for _ in range(max(1, int(block_ms / per_sample)))], settle


def _evict_buffer(evict_cache_mb: int) -> Any:
    return np.zeros(evict_cache_mb * 2**20 // 8) if evict_cache_mb else None


def measure(timer: Timer, min_count: int, min_time_s: float) -> List[float]:
    """Latency samples in ms per inference: at least ``min_count`` of them and ``min_time_s`` seconds."""
    samples = []  # type: List[float]
    started = time.perf_counter()
    while len(samples) < min_count or time.perf_counter() - started < min_time_s:
        samples.append(timer.sample())
    return samples


def measure_interleaved(
    model: Timer, reference: Timer, min_count: int, min_time_s: float, block_ms: float, settle_ms: float = 0.0
) -> Dict[str, List[float]]:
    """Model samples, reference samples and one ratio per model sample, timed in alternating blocks.

    Blocks go reference, model, reference, ..., reference, so each model block is bracketed; its ratios divide
    by the mean of the two bracketing reference medians. Each block first runs ``settle_ms`` of samples that are
    discarded (returned as ``settle_model`` and ``settle_reference``). ``min_time_s`` counts the model's kept time
    only. (Reference blocks a quarter as long saved 7% of a full table's time, but rows of two runs then agreed
    within 5% less often, 93% against 97%, so both get the same length.)
    """
    first, settle_reference = reference.block(block_ms, settle_ms)
    reference_blocks = [first]
    samples, ratios, reference_samples, settle_model = [], [], list(first), []  # type: List[float], List[float], List[float], List[float]
    timed = 0.0
    while len(samples) < min_count or timed < min_time_s:
        begin = time.perf_counter()
        block, settle = model.block(block_ms, settle_ms)
        timed += (time.perf_counter() - begin) * len(block) / (len(block) + len(settle))
        after, after_settle = reference.block(block_ms, settle_ms)
        reference_samples.extend(after)
        settle_model.extend(settle)
        settle_reference.extend(after_settle)
        scale = (float(np.median(reference_blocks[-1])) + float(np.median(after))) / 2
        reference_blocks.append(after)
        samples.extend(block)
        ratios.extend(sample / scale for sample in block)
    return {
        "samples": samples,
        "reference": reference_samples,
        "ratios": ratios,
        "settle_model": settle_model,
        "settle_reference": settle_reference,
    }


def summarize(samples: List[float]) -> Dict[str, float]:
    """Median first (robust to hiccups), with mean, std, p10, p90, min, max and count."""
    values = np.asarray(samples, dtype=np.float64)
    return {
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "min": float(values.min()),
        "max": float(values.max()),
        "count": int(values.size),
    }


def profile_nodes(
    model: Dict[str, Any], path: str, threads: int, runs: int, sessions: int = 1, warmup: int = 2
) -> List[List[Any]]:
    """``[name, op_type, us]`` per node, in execution order, from ONNX Runtime's own profiler: ``runs`` profiled
    runs shared among ``sessions`` sessions, each loaded afresh; a node's time is the mean of its medians.

    The median, not the mean: one preempted run inflates the node it hit, and with means two profiling sessions
    of one network gave unit shares within 5% of each other less often (68-94% of units at 30 runs, against
    91-96% with medians). Several sessions: a node's time also depends on where one load's memory lands, which
    more runs of the same session do not average out. Two profiles of the same network gave unit shares within
    5% of each other for 92.8% of units from one session of 40 runs, and 96.6-96.7% from two sessions of 20 (12
    subnets, four profiles each, twice; docs/measurement.md).
    """
    shares = [runs // sessions + (index < runs % sessions) for index in range(sessions)]
    profiles = [_profile_session(model, path, threads, share, warmup) for share in shares]
    times = {}  # type: Dict[str, List[float]]
    for nodes in profiles:
        for node, _, us in nodes:
            times.setdefault(node, []).append(us)
    return [[node, op, float(np.mean(times[node]))] for node, op, _ in profiles[0]]


def _profile_session(model: Dict[str, Any], path: str, threads: int, runs: int, warmup: int) -> List[List[Any]]:
    """One profiling session's ``[name, op_type, median us]`` per node. The profiler starts with the session, so
    the first ``warmup`` runs are cut off by their "model_run" spans."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        session, feeds = _ort_session(model, path, threads, profile_prefix=os.path.join(scratch, "profile"))
        for _ in range(warmup + runs):
            stop_if_orphaned()
            session.run(None, feeds)
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    spans = sorted(e["ts"] + e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = spans[warmup - 1] if warmup and len(spans) >= warmup else 0
    durations = {}  # type: Dict[str, Tuple[str, List[float]]]
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or event["ts"] < start:
            continue
        node = name[: -len("_kernel_time")]
        durations.setdefault(node, (event.get("args", {}).get("op_name", ""), []))[1].append(event["dur"])
    return [[node, op, float(np.median(times))] for node, (op, times) in durations.items()]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off, as ``timeit`` has it while timing.

    A full collection walks every live object: inside a timed run it is a pause no C++ benchmark tool has, and
    while a profile of thousands of events is parsed it took 0.2 s of the 0.25 s the parse cost (measured on this
    project's VM, a 4.7 MB ONNX Runtime profile). What one model leaves behind is freed by reference counting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def measure_model(
    model: Dict[str, Any], manifest: Dict[str, Any], base: str, reference: Optional[Timer] = None
) -> Dict[str, Any]:
    """One result or error record for one model; timed against ``reference`` when given."""
    with gc_paused():
        return _measure_model(model, manifest, base, reference)


def _measure_model(
    model: Dict[str, Any], manifest: Dict[str, Any], base: str, reference: Optional[Timer]
) -> Dict[str, Any]:
    record = {
        "type": "result",
        "name": model["name"],
        "path": model["path"],
        "runtime": model["runtime"],
        "provider": model["provider"],
        "threads": manifest["threads"],
        "evict_cache_mb": manifest["evict_cache_mb"],
    }  # type: Dict[str, Any]
    path = os.path.join(base, model["path"])
    memory = PeakMemory()
    try:
        with memory:
            run_once, provider, version = load(model, base, manifest["threads"])
            timer = Timer(
                run_once, manifest["warmup"], manifest["min_sample_ms"], _evict_buffer(manifest["evict_cache_mb"])
            )
            if reference is None:
                samples = measure(timer, manifest["min_count"], manifest["min_time_s"])
            else:
                steady = [timer.sample() for _ in range(manifest["steady_min_count"])]
                timed = measure_interleaved(
                    timer,
                    reference,
                    manifest["min_count"],
                    manifest["min_time_s"],
                    manifest["block_ms"],
                    manifest["settle_ms"],
                )
                samples = timed["samples"]
                record.update(
                    reference={
                        "name": manifest["reference"]["name"],
                        "samples_ms": timed["reference"],
                        "summary": summarize(timed["reference"]),
                        "settle_samples_ms": timed["settle_reference"],
                    },
                    ratio_samples=timed["ratios"],
                    ratio=summarize(timed["ratios"]),
                    block_ms=manifest["block_ms"],
                    settle_ms=manifest["settle_ms"],
                    settle_samples_ms=timed["settle_model"],
                )
                if steady:
                    record.update(steady_samples_ms=steady, steady=summarize(steady))
        if memory.growth_mb is not None:
            record.update(memory_mb={"peak_growth": memory.growth_mb, "how": memory.how})
        if model.get("profile_nodes"):
            if model["runtime"] != "onnxruntime":
                raise ModelError("profile_nodes needs onnxruntime, not {}".format(model["runtime"]))
            record.update(
                node_times_us=profile_nodes(
                    model, path, manifest["threads"], manifest["profile_runs"], manifest["profile_sessions"]
                ),
                profile_runs=manifest["profile_runs"],
                profile_sessions=manifest["profile_sessions"],
            )
    except ModelError as exc:
        record.update(type="error", error=str(exc))
        return record
    except ImportError as exc:
        record.update(type="error", error="runtime {} is not installed here: {}".format(model["runtime"], exc))
        return record
    except Exception as exc:  # one bad model must not stop the others
        record.update(type="error", error="{}: {}".format(type(exc).__name__, exc))
        return record
    record.update(
        provider=provider,
        runtime_version=version,
        runs_per_sample=timer.runs,
        samples_ms=samples,
        summary=summarize(samples),
    )
    return record


def load(model: Dict[str, Any], base: str, threads: int):
    """The model's ``run_once``, the provider it really got and the runtime's version."""
    path = os.path.join(base, model["path"])
    if not os.path.isfile(path):
        raise ModelError("model file {} is missing on the device; push it first".format(path))
    return LOADERS[model["runtime"]](model, path, threads)


def reference_timer(manifest: Dict[str, Any], base: str) -> Timer:
    """The reference workload, loaded once for the whole run."""
    run_once, _, _ = load(manifest["reference"], base, manifest["threads"])
    return Timer(run_once, manifest["warmup"], manifest["min_sample_ms"], _evict_buffer(manifest["evict_cache_mb"]))


# ---- manifest and results file ----------------------------------------------------------------------------------


def load_manifest(path: str) -> Dict[str, Any]:
    """Read and check the manifest; fill in defaults and each model's runtime and provider."""
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ManifestError("cannot read manifest {}: {}".format(path, exc)) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), list) or not manifest["models"]:
        raise ManifestError('manifest {} needs a non-empty "models" list'.format(path))
    for key, value in _DEFAULTS.items():
        manifest.setdefault(key, value)
    for key in ("threads", "warmup", "min_count", "evict_cache_mb", "steady_min_count"):
        lowest = 0 if key in ("warmup", "evict_cache_mb", "steady_min_count") else 1
        if isinstance(manifest[key], bool) or not isinstance(manifest[key], int) or manifest[key] < lowest:
            raise ManifestError('"{}" must be an integer of at least {}, got {!r}'.format(key, lowest, manifest[key]))
    for key in ("profile_runs", "profile_sessions"):
        if isinstance(manifest[key], bool) or not isinstance(manifest[key], int) or manifest[key] < 1:
            raise ManifestError('"{}" must be an integer of at least 1, got {!r}'.format(key, manifest[key]))
    if manifest["profile_sessions"] > manifest["profile_runs"]:
        raise ManifestError('"profile_sessions" ({}) cannot exceed "profile_runs" ({})'.format(
            manifest["profile_sessions"], manifest["profile_runs"]))
    for key in ("min_time_s", "min_sample_ms", "block_ms", "settle_ms"):
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ManifestError('"{}" must be a number of at least 0, got {!r}'.format(key, value))
    names = set()
    reference = [manifest["reference"]] if manifest["reference"] is not None else []
    for model in manifest["models"] + reference:
        if not isinstance(model, dict) or "name" not in model or "path" not in model:
            raise ManifestError('each model and the reference need "name" and "path", got {!r}'.format(model))
        if model["name"] in names:
            raise ManifestError("model name {!r} appears twice; names key the results".format(model["name"]))
        names.add(model["name"])
        extension = os.path.splitext(model["path"])[1].lower()
        model.setdefault("runtime", manifest.get("runtime") or _EXTENSIONS.get(extension))
        model.setdefault("provider", manifest.get("provider"))
        if model["runtime"] not in LOADERS:
            raise ManifestError(
                'model {!r}: runtime {!r} is not one of {}; set "runtime"'.format(
                    model["name"], model["runtime"], ", ".join(LOADERS)
                )
            )
    return manifest


def done_names(path: str) -> set:
    """Names of models already in the results file; a torn last line (power cut) is ignored."""
    names = set()
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("type") in ("result", "error"):
                    names.add(record["name"])
    return names


def append(handle, record: Dict[str, Any]) -> None:
    """One line, flushed and fsynced, so a power cut loses at most the model being measured."""
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 python_agent.py MANIFEST.json RESULTS.jsonl", file=sys.stderr)
        return 2
    manifest_path, results_path = argv
    _PARENT["pid"] = os.getppid()
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    if manifest["affinity"]:
        try:
            os.sched_setaffinity(0, manifest["affinity"])
        except (OSError, TypeError, ValueError) as exc:
            online = sorted(os.sched_getaffinity(0))
            print("error: cannot pin to CPUs {!r} ({}); this device's CPUs are {}".format(
                manifest["affinity"], getattr(exc, "strerror", None) or exc, online), file=sys.stderr)
            return 2
    with open(results_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(
                "error: another agent is writing {}; wait for it to finish or stop it".format(results_path),
                file=sys.stderr,
            )
            return 3
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":
                handle.write("\n")  # end a line torn by a power cut before appending
        done = done_names(results_path)
        todo = [model for model in manifest["models"] if model["name"] not in done]
        print("{} models, {} already measured".format(len(manifest["models"]), len(done)), file=sys.stderr)
        try:
            run(todo, manifest, manifest_path, handle)
        except Orphaned:
            print("stopped: the process that started this agent is gone", file=sys.stderr)
            return 4
        except OSError as exc:  # the results file cannot grow: a full disk, a quota
            print("error: cannot write {}: {}; free some space there and run again (what is written is kept)".format(
                results_path, exc.strerror or exc), file=sys.stderr)
            return 5
    return 0


def run(todo: List[Dict[str, Any]], manifest: Dict[str, Any], manifest_path: str, handle: Any) -> None:
    """The run between its two environment records: the reference loaded once, then every model to measure."""
    append(handle, environment("start", manifest))
    base = os.path.dirname(os.path.abspath(manifest_path))
    reference, reference_error = None, None
    if manifest["reference"] is not None and todo:
        try:
            reference = reference_timer(manifest, base)
        except Exception as exc:  # reported on every model: none can be timed against it
            reference_error = "the reference workload {} failed: {}".format(manifest["reference"]["name"], exc)
    measure_all(todo, manifest, base, handle, reference, reference_error)
    append(handle, environment("end", manifest))


def measure_all(todo: List[Dict[str, Any]], manifest: Dict[str, Any], base: str, handle: Any,
                reference: Optional[Timer], reference_error: Optional[str]) -> None:
    """Measure each model in turn, appending its record as soon as it is done."""
    for number, model in enumerate(todo, 1):
        if reference_error:
            record = {"type": "error", "name": model["name"], "path": model["path"], "error": reference_error}
        else:
            record = measure_model(model, manifest, base, reference)
        append(handle, record)
        outcome = (
            "{:.3f} ms".format(record["summary"]["median"])
            if record["type"] == "result"
            else "error: " + record["error"]
        )
        print("[{}/{}] {}: {}".format(number, len(todo), model["name"], outcome), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
