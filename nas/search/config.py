"""Everything that defines a search, stored with it so that `--resume` needs nothing else.

The stored form is one flat mapping (the keys effnas has always written), so databases from earlier versions
resume unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from effnas.cli import UsageError, at_least
from nas.evaluation.config import ZERO_COST_SCORES, RewardConfig
from nas.space.search_space import SearchSpace
from nas.training.config import ProxyConfig, SupernetConfig, TaskConfig

STRATEGIES = ("evolution", "random", "tpe", "grid", "reinforce", "predictor")
# Strategies whose proposals can be prescreened: they draw candidates one at a time and learn only from the ones
# trained (TPE and grid search track every proposal they make).
PRESCREEN_STRATEGIES = ("evolution", "random", "reinforce")
GRID_MAX_SIZE = 100_000
# full: every candidate trains the whole proxy; halving: successive halving (the first epoch, then the best 1/eta
# of candidates go on to the full proxy).
FIDELITIES = ("full", "halving")
# proxy: every candidate is trained; supernet: candidates are scored on a weight-sharing supernet of the space and
# the best `proxy_trained` of them are then trained (nas.search.supernet_search).
EVALUATORS = ("proxy", "supernet")
# What a search weighs when no --trials is given and its time budget should end it first: a supernet search, or a
# proxy search given its own --time-budget (at the default 40 trials a 30-minute one ended at 18 minutes).
BUDGET_BOUND_TRIALS = 5000
# Keeps the default run (no option but the target) under 10 minutes on a 2-core CPU.
DEFAULT_TIME_BUDGET = 540.0

# Stored key -> (part, field) for the fields of the three evaluation configs; the search's own fields are stored
# under their names.
_STORED_KEYS: dict[str, tuple[str, str]] = {
    **{name: ("task", name) for name in ("dataset", "data_dir", "subset", "val_fraction", "threads", "device")},
    "proxy_resolution": ("proxy", "resolution"),
    **{name: ("proxy", name) for name in ("epochs", "batch_size", "lr", "seed", "label_smoothing", "weight_decay")},
    "proxy_optimizer": ("proxy", "optimizer"),
    **{name: ("reward", name) for name in ("target_flops", "resolution", "constraint", "w", "max_flops_ratio",
                                           "target_latency", "latency_runtime", "latency_batch", "latency_threads",
                                           "latency_device", "latency_calibration")},
    "supernet_epochs": ("supernet", "epochs"), "supernet_random_paths": ("supernet", "random_paths"),
    "kernel_transform": ("supernet", "kernel_transform"), "calibration_images": ("supernet", "calibration_images"),
}
_PARTS = {"task": TaskConfig, "proxy": ProxyConfig, "reward": RewardConfig, "supernet": SupernetConfig}
# What a search stored before a key existed used, whatever today's default is.
_LEGACY_VALUES = {"proxy_optimizer": "sgd", "label_smoothing": 0.0, "weight_decay": 1e-5, "prescreen": 1,
                  "fidelity": "full", "eta": 3, "evaluator": "proxy"}


@dataclass(frozen=True)
class SearchConfig:
    reward: RewardConfig
    task: TaskConfig = TaskConfig()
    proxy: ProxyConfig = ProxyConfig()
    # TPE: on bench/search_surrogate.py (150 evaluations x 50 seeds) it reaches random's best in 31 evaluations;
    # on real training (bench/search_confirm.py, 60 trials x 5 seeds) its fronts and winners' rewards beat
    # random's by more than the spread, and it finds networks within the target where random rarely does.
    strategy: str = "tpe"
    trials: int = 40
    time_budget: float | None = DEFAULT_TIME_BUDGET
    fixed: dict[str, Any] = field(default_factory=dict)
    stem_stride: int = 2
    reference: bool = True
    # Candidates scored by `prescreen_score` (training-free) per candidate trained; 1 trains every proposal.
    prescreen: int = 1
    prescreen_score: str = "naswot"
    fidelity: str = "full"
    # Successive halving keeps the best 1/eta of candidates (by first-rung reward) for the full proxy.
    eta: int = 3
    # At the default 9-minute budget on 2 cores, supernet scoring weighed about ten times the candidates the proxy
    # trained, and its proxy-trained winners' rewards beat the proxy's beyond the spread (bench/supernet_search.py).
    evaluator: str = "supernet"
    supernet: SupernetConfig = SupernetConfig()
    # With the supernet evaluator: the candidates with the best supernet rewards that are then proxy-trained.
    proxy_trained: int = 3

    @property
    def seed(self) -> int:
        return self.proxy.seed

    def to_config(self) -> dict[str, Any]:
        stored = {key: getattr(getattr(self, part), name) for key, (part, name) in _STORED_KEYS.items()}
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _PARTS}
        return {**stored, **own, "fixed": dict(self.fixed)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SearchConfig:
        """The search of a stored configuration; keys this version does not know are ignored."""
        parts: dict[str, dict[str, Any]] = {part: {} for part in _PARTS}
        config = {**_LEGACY_VALUES, **config}
        for key, value in config.items():
            if key in _STORED_KEYS:
                part, name = _STORED_KEYS[key]
                parts[part][name] = value
        own = {f.name: config[f.name] for f in fields(cls) if f.name not in _PARTS and f.name in config}
        return cls(**{part: _PARTS[part](**values) for part, values in parts.items()}, **own)


def check_strategy(strategy: str, space_size: int, prescreen: int = 1, prescreen_score: str = "naswot") -> None:
    """ValueError, one line for the user, when `strategy` cannot search a space of `space_size` architectures
    (with `prescreen` candidates scored by `prescreen_score` per trial)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if prescreen < 1:
        raise ValueError(f"--prescreen must be at least 1, got {prescreen}")
    if prescreen > 1 and strategy not in PRESCREEN_STRATEGIES:
        raise ValueError(f"--prescreen works with the {', '.join(PRESCREEN_STRATEGIES)} strategies, not {strategy}")
    if prescreen_score not in ZERO_COST_SCORES:
        raise ValueError(f"unknown --prescreen-score {prescreen_score!r}; choose one of {', '.join(ZERO_COST_SCORES)}")
    if strategy == "grid" and space_size > GRID_MAX_SIZE:
        raise ValueError(
            f"grid search needs a space of at most {GRID_MAX_SIZE:,} architectures, this one has {space_size:.3g}; "
            "pin dimensions with --fix (e.g. --fix block=mbconv_e6 --fix se=0.25)"
        )


def check_config(config: SearchConfig) -> None:
    """UsageError, one line naming the problem, for a configuration no search can run."""
    task, proxy, reward = config.task, config.proxy, config.reward
    if task.dataset not in ("mnist", "fashion-mnist") and not task.data_dir:
        raise UsageError(f"--dataset {task.dataset} needs --data-dir")
    positive = {"--trials": config.trials, "--epochs": proxy.epochs, "--batch-size": proxy.batch_size,
                "--threads": task.threads, "--latency-batch": reward.latency_batch,
                "--latency-threads": reward.latency_threads, "--latency-calibration": reward.latency_calibration}
    for flag, value in positive.items():
        at_least(flag, value, 1)
    if reward.resolution < 32 or proxy.resolution < 32:
        raise UsageError("--resolution and --proxy-resolution must be at least 32")
    at_least("--subset", task.subset, 10)
    if reward.max_flops_ratio <= 1:
        raise UsageError(f"--max-flops-ratio must be above 1, got {reward.max_flops_ratio}")
    if config.eta < 2:
        raise UsageError(f"--eta must be at least 2, got {config.eta}")
    _check_supernet(config)
    if config.fidelity == "halving" and proxy.epochs < 2:
        raise UsageError("--fidelity halving needs a proxy of at least 2 epochs (--epochs)")
    if proxy.lr <= 0:
        raise UsageError(f"--lr must be positive, got {proxy.lr}")
    if proxy.weight_decay < 0:
        raise UsageError(f"--weight-decay must not be negative, got {proxy.weight_decay}")
    if not 0 <= proxy.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {proxy.label_smoothing}")
    try:
        check_strategy(config.strategy, SearchSpace(num_classes=10, in_channels=3, fixed=config.fixed).size(),
                       config.prescreen, config.prescreen_score)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_supernet(config: SearchConfig) -> None:
    for flag, value in {"--proxy-train": config.proxy_trained, "--supernet-epochs": config.supernet.epochs,
                        "--calibration-images": config.supernet.calibration_images}.items():
        at_least(flag, value, 1)
    if config.evaluator != "supernet":
        return
    if config.fidelity == "halving":
        raise UsageError("--evaluator supernet scores every candidate once; it does not go with --fidelity halving")
    if config.prescreen > 1:
        raise UsageError("--evaluator supernet scores every proposal; it does not go with --prescreen")
