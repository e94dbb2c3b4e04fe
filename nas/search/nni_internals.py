"""The one door to NNI's private internals: every NNI name that starts with `_` is used here and nowhere else.

NNI 3.0 (September 2023, the last release; its repository was archived in September 2024, so nobody upstream will
change what is patched here) offers no public way to hand an evaluator the sample instead of a built network, to be
told when a trial ends, to learn the parameter id of a submitted model, or to choose the Python of the trial
command. These classes and functions do each through NNI's private methods and attributes, behind public names
that `nas.search.strategies` and `nas.search.trial_processes` use; each names the NNI behaviour it works around
and the test that fails without it. (A strategy overrides `Strategy._run`, which
NNI's documentation names as the method a strategy implements; that is the one underscore name used elsewhere.)
They were written against NNI `NNI_VERSION`; importing this module with any other version installed raises
`NniVersionError`, one line naming both, instead of misbehaving silently.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from effnas.cli import filter_known_warnings

os.environ.setdefault("NNI_FRAMEWORK", "none")  # keeps nni.nas.evaluator from importing PyTorch Lightning

with warnings.catch_warnings():
    # Only the named warnings of effnas.cli.KNOWN_WARNINGS: NNI's note on each newer torch.nn name it leaves unwrapped.
    filter_known_warnings()
    import nni
    import nni.nas.nn.pytorch  # noqa: F401 - it warns on import: loaded here, under the filter
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine, TrainingServiceExecutionEngine
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.space import ExecutableModelSpace, ModelStatus
    from nni.nas.strategy import TPE

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
    (a duplicate or an over-budget candidate is never built).

    NNI's `FunctionalEvaluator._execute` calls the function with the network built from the sample
    (`model.executable_model()`). Test: test_nni_internals.py::test_the_evaluator_gets_the_sample_and_builds_nothing.
    """

    def _execute(self, model: Any) -> Any:
        return self.function(dict(model.sample), **self.arguments)


class InProcessTPE(TPE):
    """NNI's TPE without the one-second pause its loop takes after every proposal, whatever the engine.

    NNI's `HPOTunerStrategy._run` sleeps a second per proposal to poll a training service. With the in-process
    engine a proposal is evaluated before `submit_models` returns, so the pause waits for nothing: it cost 1 s a
    candidate, more than scoring one on a supernet (0.8 s). The proposals are NNI's own, in the same order. Test:
    test_nni_internals.py::test_tpe_in_process_proposes_what_nni_does_without_pausing."""

    def _run(self) -> None:
        if not isinstance(self.engine, SequentialExecutionEngine):
            super()._run()
            return
        space = {label: mutable.as_legacy_dict() for label, mutable in self.model_space.simplify().items()}
        with self._thread_lock:
            self.tuner.update_search_space(space)
        while self.engine.budget_available():
            with self._thread_lock:
                try:
                    parameters = self.tuner.generate_parameters(self._model_count)
                except nni.NoMoreTrialError:
                    return
                model = self.model_space.freeze(parameters)
                self._model_to_id[model] = self._model_count
                self._model_count += 1
            self.engine.submit_models(model)


class WatchedTrainingServiceEngine(TrainingServiceExecutionEngine):
    """NNI's training-service engine, telling its subclass when a trial ends (`trial_ended`, with NNI's command, on
    NNI's listener thread).

    NNI's engine keeps its own bookkeeping of trial ends, which assumes every trial reports a final metric to NNI;
    effnas's trial processes store their results in the database instead. Test:
    test_parallel.py::test_a_killed_trial_process_is_recorded_failed_and_the_search_goes_on."""

    def trial_ended(self, command: Any) -> None:
        """A trial process ended; `command.parameter_ids` and `command.trial_job_id` name it."""

    def submit_one(self, model: ExecutableModelSpace) -> int:
        """Hand one model to a trial process; NNI's parameter id for it (NNI's `submit_models` returns nothing and
        keeps the id in `_current_parameter_id`)."""
        super().submit_models(model)
        return self._current_parameter_id

    def trial_status(self, command: Any) -> ModelStatus:
        """The model status NNI gives an ended trial (NNI's mapping from its trial events, kept private)."""
        return self._interpret_trial_job_status(command.event)

    def _trial_end_callback(self, command: Any) -> None:
        self.trial_ended(command)


def set_trial_python(config: NasExperimentConfig, python: str, environment: str = "") -> None:
    """The Python executable of the trial command NNI runs in each trial process, and the `NAME=value` shell
    assignments that precede it.

    NNI's trial command always starts `sys.executable` of the search process; its only setting for the command is
    the private `_trial_command_params`. Test: test_nni_internals.py::test_the_trial_command_starts_the_python_given.
    """
    config._trial_command_params = {"python": python, "envs": environment}
