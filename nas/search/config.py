"""Everything that defines a search, stored with it so that `--resume` needs nothing else.

The stored form is one flat mapping (the keys effnas has always written), so databases from earlier versions
resume unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from nas.evaluation.config import ProxyConfig, RewardConfig, TaskConfig

STRATEGIES = ("evolution", "random", "tpe", "grid")
GRID_MAX_SIZE = 100_000
# Keeps the default run (no option but the target) under 10 minutes on a 2-core CPU.
DEFAULT_TIME_BUDGET = 540.0

# Stored key -> (part, field) for the fields of the three evaluation configs; the search's own fields are stored
# under their names.
_STORED_KEYS: dict[str, tuple[str, str]] = {
    **{name: ("task", name) for name in ("dataset", "data_dir", "subset", "val_fraction", "threads", "device")},
    "proxy_resolution": ("proxy", "resolution"),
    **{name: ("proxy", name) for name in ("epochs", "batch_size", "lr", "seed")},
    **{name: ("reward", name) for name in ("target_flops", "resolution", "constraint", "w", "max_flops_ratio")},
}
_PARTS = {"task": TaskConfig, "proxy": ProxyConfig, "reward": RewardConfig}


@dataclass(frozen=True)
class SearchConfig:
    reward: RewardConfig
    task: TaskConfig = TaskConfig()
    proxy: ProxyConfig = ProxyConfig()
    strategy: str = "evolution"
    trials: int = 40
    time_budget: float | None = DEFAULT_TIME_BUDGET
    fixed: dict[str, Any] = field(default_factory=dict)
    reference: bool = True

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
        for key, value in config.items():
            if key in _STORED_KEYS:
                part, name = _STORED_KEYS[key]
                parts[part][name] = value
        own = {f.name: config[f.name] for f in fields(cls) if f.name not in _PARTS and f.name in config}
        return cls(**{part: _PARTS[part](**values) for part, values in parts.items()}, **own)


def check_strategy(strategy: str, space_size: int) -> None:
    """ValueError, one line for the user, when `strategy` cannot search a space of `space_size` architectures."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "grid" and space_size > GRID_MAX_SIZE:
        raise ValueError(
            f"grid search needs a space of at most {GRID_MAX_SIZE:,} architectures, this one has {space_size:.3g}; "
            "pin dimensions with --fix (e.g. --fix block=mbconv_e6 --fix se=0.25)"
        )
