"""NNI adapters: the model space, the strategies and the two ways of running them. Only `nas.search` knows NNI.

`run_strategy` runs NNI 3.0 in-process (SequentialExecutionEngine, no Node.js manager, no port): it is given an
evaluation function that receives the sample dict and returns the reward. `run_strategy_on_trial_processes` runs
the same strategy on NNI's training-service engine: NNI's Node.js manager starts one trial process per candidate
(`local`, `remote` over SSH, or any other NNI training service), each of which calls the trial entry point it was
given. Everything else (decoding, counting, training, storing) lives outside, in plain effnas code; this module
imports none of it but the search space and the strategies' own logic (the REINFORCE policy, the predictor). NNI's
private names are used only in `nas.search.nni_internals`, whose public classes this module builds on; the fixes
to NNI's Node.js manager are in `nni_manager_preload.js`, which only this module loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nas.search.nni_internals import LoopStrategy, SampleEvaluator, WatchedTrainingServiceEngine, set_trial_python

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import nni
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.nn.pytorch import ModelSpace
    from nni.nas.space import ExecutableModelSpace, ModelStatus, SimplifiedModelSpace
    from nni.nas.strategy import TPE, GridSearch, Random, RegularizedEvolution
    from nni.nas.strategy.utils import DuplicationError

from torch import nn

from effnas.records import TrialRole
from nas.search.config import check_strategy
from nas.search.controller import PolicyController
from nas.search.predictor import PredictorGuidedProposer
from nas.space.builder import build_model
from nas.space.search_space import SearchSpace


class MnasModelSpace(ModelSpace):
    """The search space as an NNI model space: one `nni.choice` per stage and dimension.

    Freezing a sample gives the network the foundation's builder makes from the decoded spec. The task's facts
    are plain values, because NNI sends this object's arguments to trial processes as JSON.
    """

    def __init__(self, num_classes: int, in_channels: int, resolution: int, fixed: dict[str, Any],
                 stem_stride: int = 2) -> None:
        super().__init__()
        self.space = SearchSpace(num_classes=num_classes, in_channels=in_channels, resolution=resolution,
                                 fixed=dict(fixed), stem_stride=stem_stride)
        for label, values in self.space.choices():
            self.add_mutable(nni.choice(label, list(values)))

    @classmethod
    def of(cls, space: SearchSpace) -> MnasModelSpace:
        return cls(space.num_classes, space.in_channels, space.resolution, dict(space.fixed), space.stem_stride)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return build_model(self.space.decode(sample))


class _BudgetedEngine(SequentialExecutionEngine):
    """The sequential engine, with the budget decided by the caller (distinct trials, time, Ctrl-C)."""

    def __init__(self, budget_available: Callable[[], bool]) -> None:
        super().__init__(continue_on_failure=True)
        self._budget = budget_available

    def budget_available(self) -> bool:
        return self._budget()


ScreenScore = Callable[[dict[str, Any]], float]


def _best_of(draw: Callable[[], ExecutableModelSpace], count: int, score: ScreenScore) -> ExecutableModelSpace:
    """The best of `count` draws by the training-free `score` (the first of equals); draws that repeat an earlier
    proposal are skipped, and DuplicationError tells the strategy's retry loop when all of them did."""
    candidates = []
    for _ in range(count):
        try:
            candidates.append(draw())
        except DuplicationError:
            continue
    if not candidates:
        raise DuplicationError("every prescreened candidate was proposed before")
    scores = [score(dict(model.sample)) for model in candidates]
    return candidates[scores.index(max(scores))]


class PrescreenedRandom(Random):
    """Random search that draws `count` samples per trial and proposes the one with the best training-free score."""

    def __init__(self, count: int, score: ScreenScore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count, self._score = count, score

    def random(self, model_space: ExecutableModelSpace) -> ExecutableModelSpace:
        return _best_of(lambda: super(PrescreenedRandom, self).random(model_space), self._count, self._score)


class PrescreenedEvolution(RegularizedEvolution):
    """Regularized evolution whose every new individual (random or mutant) is the best of `count` by the
    training-free score; the population only ever holds trained individuals."""

    def __init__(self, count: int, score: ScreenScore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count, self._score = count, score

    def random(self) -> ExecutableModelSpace:
        return _best_of(super().random, self._count, self._score)

    def new_individual(self) -> ExecutableModelSpace:
        return _best_of(super().new_individual, self._count, self._score)


class Reinforce(LoopStrategy):
    """MnasNet's search on NNI's strategy interface: a policy (`PolicyController`) proposes `batch` candidates,
    the engine trains them, the policy learns from their rewards, and again. With prescreening, each proposal is
    the best of `count` policy samples by the training-free score."""

    def __init__(self, choices: list[tuple[str, tuple[Any, ...]]], seed: int, batch: int = 1, count: int = 1,
                 score: ScreenScore | None = None) -> None:
        super().__init__()
        self.controller = PolicyController(choices, seed)
        self._batch, self._count, self._score = batch, count, score

    def _propose(self) -> ExecutableModelSpace:
        draw = lambda: self.model_space.freeze(self.controller.sample())  # noqa: E731
        return draw() if self._count == 1 else _best_of(draw, self._count, self._score)

    def explore(self) -> None:
        while True:
            models = []
            while len(models) < self._batch and self.wait_for_resource():
                model = self._propose()
                self.engine.submit_models(model)
                models.append(model)
            if not models:
                return
            self.engine.wait_models(*models)
            scored = [model for model in models if model.metric is not None]
            self.controller.update([dict(model.sample) for model in scored], [float(model.metric) for model in scored])


class PredictorGuided(LoopStrategy):
    """BANANAS-style search on NNI's strategy interface (`nas.search.predictor`): an ensemble trained on the
    trials so far chooses `batch` candidates among mutations of the best ones, the engine trains them, and again.
    Only the chosen candidates are trained and stored."""

    def __init__(self, choices: list[tuple[str, tuple[Any, ...]]], seed: int,
                 describe: Callable[[dict[str, Any]], list[float]], batch: int = 1) -> None:
        super().__init__()
        self.proposer = PredictorGuidedProposer(choices, seed, describe)
        self._batch = batch

    def explore(self) -> None:
        while self.wait_for_resource():
            models = []
            for sample in self.proposer.propose(self._batch):
                if models and not self.wait_for_resource():
                    break
                model = self.model_space.freeze(sample)
                self.engine.submit_models(model)
                models.append(model)
            if not models:
                return
            self.engine.wait_models(*models)
            for model in models:
                self.proposer.record(dict(model.sample), 0.0 if model.metric is None else float(model.metric))


def make_strategy(name: str, seed: int, trials: int, space: SearchSpace, *, batch: int = 1, prescreen: int = 1,
                  screen_score: ScreenScore | None = None,
                  describe: Callable[[dict[str, Any]], list[float]] | None = None):
    """An NNI strategy by our name, seeded so that the same seed proposes the same samples; ValueError for a
    strategy that cannot search this space. `batch` candidates train at once (reinforce and predictor learn
    after each batch). With `prescreen` > 1, each trained candidate is the best of `prescreen` proposals by
    `screen_score(sample)`. `describe(sample)` gives the predictor its features beyond the decisions."""
    check_strategy(name, space.size(), prescreen)
    if name == "predictor":
        return PredictorGuided(space.choices(), seed, describe, batch=batch)
    screened = {"count": prescreen, "score": screen_score} if prescreen > 1 else None
    if name == "reinforce":
        return Reinforce(space.choices(), seed, batch=batch, **(screened or {}))
    if name == "evolution":
        population = max(4, min(50, trials // 3))
        options = dict(population_size=population, sample_size=max(2, population // 3), mutation_prob=0.1,
                       dedup=True, seed=seed)
        return PrescreenedEvolution(**screened, **options) if screened else RegularizedEvolution(**options)
    if name == "random":
        return PrescreenedRandom(**screened, dedup=True, seed=seed) if screened else Random(dedup=True, seed=seed)
    if name == "tpe":
        return TPE(optimize_mode="maximize", seed=seed)
    return GridSearch(shuffle=True, seed=seed, dedup=True)


def route_nni_logs(log_file: Path | None, verbose: bool) -> None:
    """NNI logs go to `log_file` (and to the terminal only with `verbose`)."""
    logger = logging.getLogger("nni")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    if verbose:
        logger.addHandler(logging.StreamHandler())


def run_strategy(
    space: SearchSpace,
    strategy: Any,
    evaluate_sample: Callable[[dict[str, Any]], float],
    budget_available: Callable[[], bool],
) -> None:
    """Explore `space` with `strategy` until `budget_available()` turns false or the strategy has nothing left.

    `evaluate_sample(sample)` returns the reward that the strategy maximises.
    """

    def evaluate(sample: dict[str, Any]) -> None:
        nni.report_final_result(float(evaluate_sample(sample)))

    model_space = MnasModelSpace.of(space)
    executable = SimplifiedModelSpace.from_model(model_space, SampleEvaluator(evaluate))
    strategy(executable, _BudgetedEngine(budget_available))


# -- NNI's training-service engine: one process per candidate ------------------------------------------------

MANAGER_PRELOAD = Path(__file__).with_name("nni_manager_preload.js")
FORKSERVER_MODULE = "nas.search.trial_forkserver"
# How long the engine waits for a worker to come free before it lets the strategy check its budget.
IDLE_WAIT_SECONDS = 5.0
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
        self._news = threading.Event()  # set by NNI's listener thread: a trial ended or a worker came free
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
        # NNI's strategies sleep a second whenever this is false; waiting here for NNI's news instead hands the
        # next candidate out as soon as a trial process ends.
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
            self._news.wait(left)

    def worker_requested(self) -> None:
        self._news.set()

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
def _manager_preload(loopback: bool) -> Iterator[None]:
    """Has Node.js preload nni_manager_preload.js into NNI's manager: it ends the manager when the search
    process is gone and, with `loopback` (NNI 3.0 has no setting for the address and listens on all
    interfaces), binds the manager's port to 127.0.0.1."""
    saved = {name: os.environ.get(name) for name in ("NODE_OPTIONS", "EFFNAS_MANAGER_LOOPBACK")}
    os.environ["NODE_OPTIONS"] = f"{saved['NODE_OPTIONS'] or ''} --require {MANAGER_PRELOAD}".strip()
    os.environ["EFFNAS_MANAGER_LOOPBACK"] = "1" if loopback else "0"
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
    function (NNI imports it by name there) and report its result with `nni.report_final_result`. The fork
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
            with _manager_preload(loopback=options.platform == "local"):
                experiment.start(port=port)
            if experiment.trial_engine is not None:
                experiment.trial_engine.wait_models()
        finally:
            experiment.stop()
