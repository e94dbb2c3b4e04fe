"""Each patch of NNI 3.0's private behaviour in `nas.search.nni_internals` does what NNI alone would not."""

from types import SimpleNamespace

from nas.search.nni_internals import SampleEvaluator, set_trial_python
from nas.search.strategies import MnasModelSpace, make_strategy, run_strategy
from nas.search.trial_processes import TrialProcessOptions, experiment_config
from nas.space.search_space import SearchSpace


def test_the_evaluator_gets_the_sample_and_builds_nothing(monkeypatch):
    from nni.nas.space import SimplifiedModelSpace

    space = SearchSpace(num_classes=10, in_channels=1, resolution=32)
    model_space = MnasModelSpace.of(space)
    seen = []
    executable = SimplifiedModelSpace.from_model(model_space, SampleEvaluator(lambda sample, tag: seen.append(
        (sample, tag)), tag="x")).freeze(space.b0_sample())
    # NNI's own FunctionalEvaluator builds the network first (`executable_model()`): here building fails.
    monkeypatch.setattr(type(executable), "executable_model", lambda self: (_ for _ in ()).throw(AssertionError))
    executable.execute()  # what NNI's engines call, in this process or in a trial process
    assert seen == [(space.b0_sample(), "x")] and type(seen[0][0]) is dict


def test_the_trial_command_starts_the_python_given(tmp_path):
    options = TrialProcessOptions(workers=2, working_directory=tmp_path)
    default = experiment_config(options).canonical_copy().trial_command
    config = experiment_config(options, trial_python="/opt/py/bin/python -m forkserver run /tmp/s")
    command = config.canonical_copy().trial_command
    assert command.startswith("/opt/py/bin/python -m forkserver run /tmp/s") and command != default
    set_trial_python(config, "python3", "NNI_FRAMEWORK=none")
    assert config.canonical_copy().trial_command.startswith("NNI_FRAMEWORK=none python3 ")


def test_tpe_in_process_proposes_what_nni_does_without_pausing(monkeypatch):
    """NNI's TPE sleeps a second after every proposal; in process that doubled the time a supernet search spends
    per candidate."""
    import nni.nas.strategy.hpo as hpo
    from nni.nas.strategy import TPE

    pauses = []
    monkeypatch.setattr(hpo, "time", SimpleNamespace(sleep=pauses.append))
    space = SearchSpace(num_classes=10, in_channels=1, resolution=32)

    def proposals(strategy):
        seen = []

        def evaluate(sample):
            seen.append(sample)
            return float(sum(value == 5 for value in sample.values()))

        run_strategy(space, strategy, evaluate, lambda: len(seen) < 6)
        return seen

    ours = proposals(make_strategy("tpe", 3, 6, space))
    assert len(ours) == 6 and pauses == []
    assert proposals(TPE(optimize_mode="maximize", seed=3)) == ours and len(pauses) == 6

