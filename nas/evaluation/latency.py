"""Inference latency of a network on this machine, measured the way `torch.utils.benchmark` and ONNX Runtime's
`onnxruntime_perf_test` do: a fixed number of intra-op threads, warm-up, then the median and interquartile range of
repeated timed runs (synchronising the GPU before the clock is read), each window of runs timed in turn with a
fixed reference network so that a shared machine's drifting speed cancels out (`measure_latency`).

A figure never travels without its protocol (`LatencyProtocol.describe()`): runtime and version, threads, batch,
device and CPU model; the resolution is the measured input's.
"""

from __future__ import annotations

import hashlib
import io
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnas.records import Latency

RUNTIMES = ("eager", "onnxruntime")
RUNTIME_NAMES = {"eager": "PyTorch eager", "onnxruntime": "ONNX Runtime"}
# Warm-up runs and seconds before timing: the first calls allocate and pick kernels.
WARMUP_RUNS, WARMUP_SECONDS = 5, 0.05
# Timing alternates windows (at least one run and WINDOW_SECONDS) of the network and of the reference: at least
# MIN_WINDOWS of them and MIN_SECONDS of the network's runs; a slow network (a B7 at batch 32) stops after
# MAX_SECONDS and FEWEST_WINDOWS. A window holds at most MAX_RUNS runs.
WINDOW_SECONDS, MIN_WINDOWS, MIN_SECONDS, MAX_RUNS = 0.02, 11, 0.1, 2000
MAX_SECONDS, FEWEST_WINDOWS = 3.0, 3
# Windows of the reference network that set its fast-end latency.
REFERENCE_WINDOWS = 40
ONNX_OPSET = 18
# Where a latency search's stored config keeps the environment its figures were measured in.
LATENCY_ENVIRONMENT = "latency_environment"


class LatencyError(ValueError):
    """A protocol this machine cannot measure; the message is one line for the user."""


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency is measured. `device` is cpu or cuda; the resolution belongs to the measured input."""

    runtime: str = "eager"
    threads: int = 1
    batch: int = 1
    device: str = "cpu"

    def check(self) -> None:
        """LatencyError, one line, for a protocol this machine cannot run."""
        if self.runtime not in RUNTIMES:
            raise LatencyError(f"unknown latency runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if self.threads < 1 or self.batch < 1:
            raise LatencyError(f"latency threads and batch must be at least 1, got {self.threads} and {self.batch}")
        if self.device not in ("cpu", "cuda"):
            raise LatencyError(f"unknown latency device {self.device!r}; choose cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise LatencyError("latency on cuda was asked for, but this process sees no CUDA GPU")
        if self.device == "cuda" and self.runtime == "onnxruntime" and "CUDAExecutionProvider" not in _ort_providers():
            raise LatencyError("ONNX Runtime here has no CUDA provider (install onnxruntime-gpu)")

    def environment(self) -> dict[str, str | int]:
        """Everything a figure measured under this protocol depends on: the protocol, the runtime's version, the
        device's and the CPU's names."""
        return {**asdict(self), "runtime_version": runtime_version(self.runtime), "device_name": device_name(self.device),
                "cpu": cpu_model()}

    def key(self) -> str:
        """The latency table's key: two protocols measure comparable figures only when their keys are equal."""
        return hashlib.sha256(json.dumps(self.environment(), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line: what a latency under this protocol is measured on, here."""
        return describe_environment(self.environment())


def describe_environment(env: dict[str, Any]) -> str:
    """One line from a protocol's stored environment: runtime and version, threads, batch, device or CPU."""
    threads = f"{env['threads']} thread{'s' if env['threads'] > 1 else ''}"
    where = env["device_name"] if env["device"] == "cuda" else f"CPU {env['cpu']}"
    return f"{RUNTIME_NAMES[env['runtime']]} {env['runtime_version']}, {threads}, batch {env['batch']}, {where}"


@cache
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    return torch.__version__


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


@contextmanager
def _intra_op_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _window(run: Callable[[], object], synchronize: Callable[[], None]) -> list[float]:
    """Seconds of each run of one window: at least one run and WINDOW_SECONDS."""
    times: list[float] = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < WINDOW_SECONDS and len(times) < MAX_RUNS):
        began = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - began)
    return times


def _warm_up(run: Callable[[], object], synchronize: Callable[[], None]) -> None:
    start = time.perf_counter()
    for index in range(MAX_RUNS):
        run()
        elapsed = time.perf_counter() - start
        if (index + 1 >= WARMUP_RUNS and elapsed >= WARMUP_SECONDS) or elapsed >= MAX_SECONDS / 4:
            break
    synchronize()


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """`model` as an in-memory ONNX model for `example`'s shape.

    TorchScript-based export, deprecated in favour of torch.export's but 14 ms a block against 900 ms here, and a
    latency table exports thousands of blocks; ONNX Runtime fuses and runs the two graphs alike. The deployable
    files of `scaling.export` use the torch.export-based exporter."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter's own deprecation notices (the exporter itself, its logging helper) are the choice above.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET)
    return buffer.getvalue()


def _runner(model: nn.Module, example: torch.Tensor, protocol: LatencyProtocol) -> Callable[[], object]:
    """One forward pass of `model` on `example` under the protocol's runtime, as a call."""
    model = model.eval()
    if protocol.runtime == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = protocol.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CUDAExecutionProvider"] if protocol.device == "cuda" else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(onnx_bytes(model, example), options, providers=providers)
        feed = {session.get_inputs()[0].name: example.numpy()}
        # ONNX Runtime returns its outputs on the host, so a run has synchronised the GPU when it returns.
        return lambda: session.run(None, feed)
    device = torch.device(protocol.device)
    model, example = model.to(device), example.to(device)
    if example.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(example)

    return run


def _synchronizer(protocol: LatencyProtocol) -> Callable[[], None]:
    return torch.cuda.synchronize if protocol.device == "cuda" and protocol.runtime == "eager" else (lambda: None)


@cache
def _reference_runner(protocol: LatencyProtocol) -> Callable[[], object]:
    from nas.space.builder import build_model
    from nas.space.spec import efficientnet_b0

    spec = replace(efficientnet_b0(num_classes=10), resolution=32, stem_stride=2)
    return _runner(build_model(spec), torch.randn(1, 3, 32, 32), replace(protocol, batch=1))


def reference_speed(protocol: LatencyProtocol) -> float:
    """The reference network's latency (ms) on this machine at its fast end: the lower quartile of the medians of
    REFERENCE_WINDOWS windows. Every measurement under the protocol is scaled to it."""
    protocol.check()
    run, synchronize = _reference_runner(protocol), _synchronizer(protocol)
    with _intra_op_threads(protocol.threads):
        _warm_up(run, synchronize)
        medians = [statistics.median(_window(run, synchronize)) for _ in range(REFERENCE_WINDOWS)]
    return statistics.quantiles(medians, n=4)[0] * 1e3


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], protocol: LatencyProtocol,
                    reference_ms: float | None = None) -> Latency:
    """The latency of one forward pass of `model` (in eval mode) on a random input of `input_shape` (its batch
    dimension replaced by the protocol's batch), under `protocol`.

    A shared machine's speed drifts by tens of percent over seconds (bench/latency.py), and every network slows
    alike: the window medians of two networks timed in turn correlate at 0.99. So windows of the network alternate
    with windows of a fixed reference network, and the figure is the median ratio of the two, times the
    reference's latency at the machine's fast end (`reference_ms`, by default measured once per protocol and
    process by `reference_speed`). The raw median of the timed runs is kept beside it."""
    protocol.check()
    if reference_ms is None:
        reference_ms = _reference_speed(protocol)
    shape = (protocol.batch, *input_shape[1:])
    resolution = shape[-1] if len(shape) == 4 else 0
    run = _runner(model, torch.randn(shape), protocol)
    reference, synchronize = _reference_runner(protocol), _synchronizer(protocol)
    ratios: list[float] = []
    times: list[float] = []
    with _intra_op_threads(protocol.threads):
        _warm_up(run, synchronize)
        _warm_up(reference, synchronize)
        start = time.perf_counter()
        while len(ratios) < MIN_WINDOWS or sum(times) < MIN_SECONDS:
            if len(ratios) >= FEWEST_WINDOWS and time.perf_counter() - start >= MAX_SECONDS:
                break
            base = statistics.median(_window(reference, synchronize))
            window = _window(run, synchronize)
            ratios.append(statistics.median(window) / base)
            times.extend(window)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return Latency(median_ms=statistics.median(ratios) * reference_ms,
                   iqr_ms=(quartiles[2] - quartiles[0]) * reference_ms, runs=len(times), resolution=resolution,
                   raw_median_ms=statistics.median(times) * 1e3)


@cache
def _reference_speed(protocol: LatencyProtocol) -> float:
    return reference_speed(protocol)
