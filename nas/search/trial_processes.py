"""Running a strategy on NNI's training-service engine: NNI's Node.js manager starts one trial process per
candidate (`local`, `remote` over SSH, or any other NNI training service), each of which calls the trial entry
point it was given and stores its result in the database. The fixes to NNI's Node.js manager are in
`nni_manager_preload.js`, which only this module loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# nni_internals imports NNI first: it checks NNI's version and keeps NNI's known import warnings out.
from nas.search.nni_internals import SampleEvaluator, WatchedTrainingServiceEngine, set_trial_python

# isort: split
from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.space import ExecutableModelSpace, ModelStatus, SimplifiedModelSpace

from effnas.cli import UsageError
from effnas.records import TrialRole
from nas.search.strategies import MnasModelSpace
from nas.space.search_space import SearchSpace

MANAGER_PRELOAD = Path(__file__).with_name("nni_manager_preload.js")
FORKSERVER_MODULE = "nas.search.trial_forkserver"
# How long the engine waits for a worker to come free before it lets the strategy check its budget.
IDLE_WAIT_SECONDS = 5.0
WORKER_POLL_SECONDS = 0.2
# Keys of an NNI experiment configuration that `--nni-config` may set; the rest (search space, trial command,
# budgets, tuner) belong to effnas.
NNI_CONFIG_KEYS = {
    "trainingService", "trialConcurrency", "trialGpuNumber", "nniManagerIp", "experimentName", "logLevel",
}


# NNI's trial process imports nni.nas.evaluator, which imports PyTorch Lightning unless told there is no framework.
REMOTE_TRIAL_ENVIRONMENT = "NNI_FRAMEWORK=none"
# How NNI's manager ends a trial whose remote machine was lost (nni_manager_preload.js sets it).
LOST_TRIAL_EVENT = "SYS_CANCELED"
# The packages a trial process imports: NNI uploads them to the trial machines, which need only their dependencies.
TRIAL_PACKAGES = ("effnas", "nas", "db")


class NniConfigError(ValueError):
    """An `--nni-config` that NNI would not accept; the message is one line meant for the user."""


@dataclass(frozen=True)
class TrialProcessOptions:
    """How NNI's manager runs the trial processes."""

    workers: int
    nni_config: dict[str, Any] = field(default_factory=dict)
    port: int | None = None
    working_directory: Path = Path(".effnas") / "nni-experiments"
    # The address NNI's manager listens on (its port and, on remote platforms, the next); None: all interfaces.
    manager_address: str | None = "127.0.0.1"

    @property
    def platform(self) -> str:
        service = self.nni_config.get("trainingService") or {}
        return str(service.get("platform", "local")) if isinstance(service, dict) else "local"


def _case_free(key: str) -> str:
    return key.replace("_", "").lower()


def experiment_config(options: TrialProcessOptions, trial_python: str | None = None) -> NasExperimentConfig:
    """The NNI experiment configuration for `options`, validated; NniConfigError names what NNI refuses.
    `trial_python` replaces the Python that NNI's trial command starts."""
    allowed = {_case_free(key): key for key in NNI_CONFIG_KEYS}
    unknown = [key for key in options.nni_config if _case_free(key) not in allowed]
    if unknown:
        raise NniConfigError(
            f"--nni-config may not set {', '.join(unknown)}; it may set {', '.join(sorted(NNI_CONFIG_KEYS))} "
            "(budgets, strategy and trial command come from nas.search)"
        )
    values = {allowed[_case_free(key)]: value for key, value in options.nni_config.items()}
    values.setdefault("trainingService", {"platform": "local"})
    values["trialConcurrency"] = options.workers
    values.setdefault("experimentName", "effnas")
    if options.platform != "local" and options.manager_address is not None:
        # The trials reach the manager where it listens.
        values.setdefault("nniManagerIp", options.manager_address)
    try:
        config = NasExperimentConfig("ts", "simplified", **values)
        config.experiment_working_directory = str(options.working_directory.resolve())
        if trial_python is not None:
            set_trial_python(config, trial_python)
        elif options.platform != "local":
            # The trial machines run their own Python (the trainingService's pythonPath), not this one, and
            # inherit nothing from this process's environment.
            set_trial_python(config, "python3", REMOTE_TRIAL_ENVIRONMENT)
        config.canonical_copy()
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise NniConfigError(f"NNI refuses the configuration: {_one_line(exc)}") from None
    return config


def trial_process_options(workers: int | None, nni_config_file: str | None, port: int | None, address: str | None,
                          db_url: str) -> TrialProcessOptions | None:
    """How to run trial processes from the search's options, or None to train in this process; UsageError names
    the first problem."""
    from db import sqlite_path

    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if port is not None and not 1024 <= port <= 65534:
        raise UsageError(f"--nni-port must be between 1024 and 65534, got {port}")
    nni_config = read_nni_config(nni_config_file) if nni_config_file else {}
    concurrency = nni_config.pop("trialConcurrency", None)
    if concurrency is not None and workers is not None and concurrency != workers:
        raise UsageError(f"--workers {workers} and trialConcurrency {concurrency} in {nni_config_file} disagree")
    workers = workers or concurrency or 1
    if workers == 1 and not nni_config:
        return None
    options = TrialProcessOptions(workers=workers, nni_config=nni_config, port=port)
    try:
        experiment_config(options)
    except NniConfigError as exc:
        raise UsageError(f"{nni_config_file}: {exc}" if nni_config_file else str(exc)) from None
    if options.platform != "local" and sqlite_path(db_url) is not None:
        raise UsageError(
            f"trials on the {options.platform} training service cannot write to a SQLite file on this machine; "
            "pass --db with a database server URL they can reach (postgresql://...)"
        )
    return dataclasses.replace(options, manager_address=address or default_manager_address(options))


def default_manager_address(options: TrialProcessOptions) -> str | None:
    """Where NNI's manager listens unless told: 127.0.0.1 for local trials; for remote machines the configured
    nniManagerIp, else this machine's address on the route to the first machine; None (all interfaces, NNI's own
    choice) for other platforms, whose machines effnas cannot name."""
    if options.platform == "local":
        return "127.0.0.1"
    service = options.nni_config.get("trainingService") or {}
    if options.nni_config.get("nniManagerIp"):
        return str(options.nni_config["nniManagerIp"])
    machines = service.get("machineList") or [] if options.platform == "remote" else []
    if not machines or not isinstance(machines[0], dict) or not machines[0].get("host"):
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            # A datagram socket's connect sends nothing: it only picks the route, and so the local address.
            probe.connect((str(machines[0]["host"]), int(machines[0].get("port") or 22)))
            return probe.getsockname()[0]
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot find a route to remote machine {machines[0]['host']}: {_one_line(exc)}; pass "
                         "--nni-address") from None


def read_nni_config(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --nni-config {path}: {exc.strerror}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} must hold a mapping of NNI settings (trainingService, trialConcurrency, ...)")
    if "trialConcurrency" in config and (not isinstance(config["trialConcurrency"], int)
                                         or config["trialConcurrency"] < 1):
        raise UsageError(f"{path}: trialConcurrency must be a whole number of at least 1")
    return config


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def free_port() -> int:
    """A port on this machine that is free, and whose successor (NNI's second port for remote platforms) is too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


class TrialHost(Protocol):
    """What the training-service engine asks of the search (a `nas.search.study.Study` answers)."""

    def pending_reference(self) -> dict[str, Any] | None: ...

    def screen(self, sample: dict[str, Any]) -> float | None: ...

    def reserve(self, sample: dict[str, Any], role: TrialRole) -> None: ...

    def collect(self, sample: dict[str, Any], role: TrialRole, log_hint: str = "", lost: bool = False) -> float: ...

    def budget_available(self) -> bool: ...


class _TrialProcessEngine(WatchedTrainingServiceEngine):
    """NNI's training-service engine with the search in charge of what is trained.

    A candidate that needs no training (already evaluated, or over the FLOPs limit) is answered at once; the
    others are queued in the database, then handed to NNI. When a trial process ends, its result is read from the
    database. NNI reports trial ends on its listener thread; they are handled on the strategy's thread, in the
    engine calls the strategy makes while it waits, so the search's state has one writer.
    """

    def __init__(self, binding: NasExperiment, host: TrialHost, reference: ExecutableModelSpace | None) -> None:
        self._host = host
        self._reference = reference
        self._ended: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._news = threading.Event()  # set by NNI's listener thread: a trial ended
        # NNI parameter id -> the model in a trial process and its role; NNI itself keeps only weak references.
        self._pending: dict[int, tuple[ExecutableModelSpace, TrialRole]] = {}
        super().__init__(binding, fetch_intermediates=False)

    def _hand_out(self, model: ExecutableModelSpace, role: TrialRole) -> None:
        self._host.reserve(dict(model.sample), role)
        self._pending[self.submit_one(model)] = (model, role)

    def submit_models(self, *models: ExecutableModelSpace) -> None:
        self._handle_ended()
        for model in models:
            value = self._host.screen(dict(model.sample))
            if value is None:
                self._hand_out(model, TrialRole.CANDIDATE)
                continue
            self.dispatch_model_event(FinalMetricEvent(model, value))
            self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))

    def idle_worker_available(self) -> bool:
        # NNI's strategies sleep a second whenever this is false; waiting here instead hands the next candidate
        # out as soon as a trial process ends, or within a poll of NNI's count of free workers (NNI has no public
        # word for a worker coming free).
        deadline = time.monotonic() + IDLE_WAIT_SECONDS
        while True:
            self._news.clear()
            self._handle_ended()
            if self._reference is not None and super().idle_worker_available():
                # EfficientNet-B0 takes the first free worker; the strategy never sees it.
                reference, self._reference = self._reference, None
                self._hand_out(reference, TrialRole.REFERENCE)
            if super().idle_worker_available():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._news.wait(min(left, WORKER_POLL_SECONDS))

    def budget_available(self) -> bool:
        self._handle_ended()
        self._check_manager()
        return self._host.budget_available()

    def wait_models(self, *models: ExecutableModelSpace) -> None:
        while True:
            self._news.clear()
            self._handle_ended()
            if all(model.status.completed() for model in models) and (models or not self._pending):
                return
            self._check_manager()
            self._news.wait(1.0)

    def _check_manager(self) -> None:
        status = self.nodejs_binding.get_status()
        if status == "ERROR":
            raise RuntimeError(f"NNI's manager stopped with an error; see {self.nodejs_binding.log_folder}")

    def trial_ended(self, command: Any) -> None:
        self._ended.put(command)
        self._news.set()

    def _handle_ended(self) -> None:
        while True:
            try:
                command = self._ended.get_nowait()
            except queue.Empty:
                return
            if len(command.parameter_ids) != 1:
                continue
            entry = self._pending.pop(command.parameter_ids[0], None)
            if entry is None:
                continue
            model, role = entry
            hint = f"NNI trial {command.trial_job_id}, logs under {self.nodejs_binding.log_folder.parent}"
            lost = command.event == LOST_TRIAL_EVENT
            value = self._host.collect(dict(model.sample), role, hint, lost=lost)
            if role is TrialRole.CANDIDATE:
                self.dispatch_model_event(FinalMetricEvent(model, value))
                self.dispatch_model_event(TrainingEndEvent(model, self.trial_status(command)))


class _SearchExperiment(NasExperiment):
    def __init__(self, space: MnasModelSpace, evaluator: Any, strategy: Any, config: NasExperimentConfig,
                 host: TrialHost, reference: ExecutableModelSpace | None) -> None:
        super().__init__(space, evaluator, strategy, config)
        self._host = host
        self._reference = reference
        self.trial_engine: _TrialProcessEngine | None = None

    def execution_engine_factory(self, config: Any) -> _TrialProcessEngine:
        self.trial_engine = _TrialProcessEngine(self, self._host, self._reference)
        return self.trial_engine

    @property
    def log_folder(self) -> Path:
        return Path(self.config.canonical_copy().experiment_working_directory) / self.id / "log"


@contextlib.contextmanager
def _manager_preload(address: str | None) -> Iterator[None]:
    """Has Node.js preload nni_manager_preload.js into NNI's manager: it ends the manager when the search
    process is gone and, given an `address` (NNI 3.0 has no setting for it and listens on all interfaces, with no
    authentication), binds the manager's ports to that address."""
    saved = {name: os.environ.get(name) for name in ("NODE_OPTIONS", "EFFNAS_MANAGER_ADDRESS")}
    os.environ["NODE_OPTIONS"] = f"{saved['NODE_OPTIONS'] or ''} --require {MANAGER_PRELOAD}".strip()
    os.environ["EFFNAS_MANAGER_ADDRESS"] = address or ""
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _trial_forkserver(log_file: Path) -> Iterator[str]:
    """Runs the trial fork server while the search lasts; yields the `python` of NNI's trial command that uses it."""
    folder = Path(tempfile.mkdtemp(prefix="effnas-trials-"))  # private (0700): the socket runs trials
    path = folder / "trials.sock"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", FORKSERVER_MODULE, "serve", str(path), str(os.getpid())],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the trial fork server did not start; see {log_file}")
        yield f"{sys.executable} -m {FORKSERVER_MODULE} run {path}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        server.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _trial_code_directory(working_directory: Path) -> Iterator[None]:
    """Works, while the search lasts, in a folder that holds a copy of the packages trial processes import.

    NNI uploads the search's working directory to every remote machine as the trials' code (a NAS experiment
    cannot name another folder), so this keeps the upload to effnas's own code, never the user's data or a
    virtual environment, and the trials run exactly the search's version of it."""
    source = Path(__file__).resolve().parents[2]  # the folder that holds the packages, installed or checked out
    working_directory.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="trial-code-", dir=working_directory))
    for package in TRIAL_PACKAGES:
        shutil.copytree(source / package, folder / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
        shutil.rmtree(folder, ignore_errors=True)


def run_strategy_on_trial_processes(
    space: SearchSpace,
    strategy: Any,
    host: TrialHost,
    trial_entry: Callable[..., None],
    entry_arguments: dict[str, Any],
    options: TrialProcessOptions,
    log_name: str,
    on_start: Callable[[str, int, Path], None] | None = None,
) -> None:
    """Explore `space` with `strategy`, training each candidate in a trial process that NNI's manager starts
    (up to `options.workers` at once), until `host.budget_available()` turns false or the strategy has nothing
    left, then wait for the trials still running.

    A trial process calls `trial_entry(sample, role=..., **entry_arguments)`, which must be a module-level
    function (NNI imports it by name there) and store its result where `host.collect` reads it. The fork
    server logs to `log_name` under the working directory. `on_start(experiment_id, port, log_folder)` is
    called just before the manager starts."""
    options = dataclasses.replace(options, working_directory=options.working_directory.resolve())
    model_space = MnasModelSpace.of(space)

    def evaluator(role: TrialRole) -> SampleEvaluator:
        return SampleEvaluator(trial_entry, role=role.value, **entry_arguments)

    reference_sample = host.pending_reference()
    reference = None
    if reference_sample is not None:
        reference = SimplifiedModelSpace.from_model(model_space, evaluator(TrialRole.REFERENCE)).freeze(
            reference_sample
        )
    with contextlib.ExitStack() as stack:
        trial_python = None
        if options.platform == "local":
            folder = options.working_directory / "forkserver"
            trial_python = stack.enter_context(_trial_forkserver(folder / log_name))
        else:
            stack.enter_context(_trial_code_directory(options.working_directory))
        experiment = _SearchExperiment(
            model_space, evaluator(TrialRole.CANDIDATE), strategy, experiment_config(options, trial_python), host,
            reference,
        )
        port = options.port or free_port()
        if on_start is not None:
            on_start(experiment.id, port, experiment.log_folder)
        try:
            with _manager_preload(options.manager_address):
                experiment.start(port=port)
            if experiment.trial_engine is not None:
                experiment.trial_engine.wait_models()
        finally:
            experiment.stop()
