"""The one door to NNI's private internals: every NNI name that starts with `_` is used here and nowhere else.

NNI 3.0 (September 2023, the last release) offers no public way to hand an evaluator the sample instead of a
built network, to write a strategy as one loop, to be told when a training-service worker comes free or a
trial ends, to learn the parameter id of a submitted model, or to choose the Python of the trial command.
These classes and functions do each through NNI's private methods and attributes, behind public names that
`nas.search.nni_adapters` uses. They were written against NNI `NNI_VERSION`; importing this module with any
other version installed raises `NniVersionError`, one line naming both, instead of misbehaving silently.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

os.environ.setdefault("NNI_FRAMEWORK", "none")  # keeps nni.nas.evaluator from importing PyTorch Lightning

with warnings.catch_warnings():
    # NNI 3.0 warns that newer torch classes "are not nn.Module": harmless, see ../shared/notes/nni-3.0.md.
    warnings.simplefilter("ignore")
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import TrainingServiceExecutionEngine
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.space import ExecutableModelSpace, ModelStatus
    from nni.nas.strategy import Strategy

NNI_VERSION = "3.0"


class NniVersionError(ImportError):
    """The installed NNI is not the version whose internals effnas uses; the message is one line for the user."""


def check_nni_version(installed: str) -> None:
    """NniVersionError unless `installed` is NNI_VERSION."""
    if installed != NNI_VERSION:
        raise NniVersionError(f"effnas's search is written for NNI {NNI_VERSION}, but NNI {installed} is installed; "
                              f"install the supported one with: pip install nni=={NNI_VERSION}")


check_nni_version(nni.__version__)


class SampleEvaluator(FunctionalEvaluator):
    """Hands the sample, not a built network, to the evaluation function: it decides whether to build at all
    (a duplicate or an over-budget candidate is never built)."""

    def _execute(self, model: Any) -> Any:
        return self.function(dict(model.sample), **self.arguments)


class LoopStrategy(Strategy):
    """A strategy written as one loop, `explore()`, over the engine it was given (`self.engine`)."""

    def explore(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        self.explore()


class WatchedTrainingServiceEngine(TrainingServiceExecutionEngine):
    """NNI's training-service engine, telling its subclass when a worker is requested (`worker_requested`) and
    when a trial ends (`trial_ended`, with NNI's command), both on NNI's listener thread. Metrics that trial
    processes report to NNI are ignored: effnas's trial processes store their results in the database."""

    def worker_requested(self) -> None:
        """A worker may have come free."""

    def trial_ended(self, command: Any) -> None:
        """A trial process ended; `command.parameter_ids` and `command.trial_job_id` name it."""

    def submit_one(self, model: ExecutableModelSpace) -> int:
        """Hand one model to a trial process; NNI's parameter id for it."""
        super().submit_models(model)
        return self._current_parameter_id

    def trial_status(self, command: Any) -> ModelStatus:
        """The model status NNI gives an ended trial."""
        return self._interpret_trial_job_status(command.event)

    def _request_trial_jobs_callback(self, command: Any) -> None:
        super()._request_trial_jobs_callback(command)
        self.worker_requested()

    def _report_metric_data_callback(self, command: Any) -> None:
        return None

    def _trial_end_callback(self, command: Any) -> None:
        self.trial_ended(command)


def set_trial_python(config: NasExperimentConfig, python: str, environment: str = "") -> None:
    """The Python executable of the trial command NNI runs in each trial process, and the `NAME=value` shell
    assignments that precede it."""
    config._trial_command_params = {"python": python, "envs": environment}


