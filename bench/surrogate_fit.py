"""How well a surrogate fitted on the evaluation table ranks architectures it has not seen.

Run: .venv/bin/python bench/surrogate_fit.py [--table bench/evaluation_table.json] [--repeats 3]

For each ensemble model (extra trees, random forest, LightGBM, XGBoost) and each set of training-free scores
among its features (none, as `--strategy predictor` uses; naswot alone; grad_norm alone; all three), 10-fold
cross-validation,
repeated with `--repeats` shufflings: every entry's seed-0 proxy accuracy is predicted by a model fitted on the
other folds, and the Kendall tau of the pooled out-of-fold predictions against the proxy is reported as mean and
sd over the repeats. Beside them, the two references of the issue: the proxy's own seed-to-seed tau (seed 0
against seed 1 on the entries trained twice: no predictor of one run can beat another run by much) and FLOPs
alone. The surrogate bench (bench/search_surrogate.py) uses, for the score set it is given, the model with the
best tau. A learning curve shows what an online predictor sees: each model fitted on n = 20, 40, 80, 150 random
entries and ranked on the rest (5 draws each), without training-free scores and with grad_norm. Budget: about
10 minutes on 2 cores. Results: bench/surrogate_fit.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bench_json import default_path, write_json
from scipy.stats import kendalltau

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

FOLDS = 10
SCORE_SETS = {"none": (), "naswot": ("naswot",), "grad_norm": ("grad_norm",),
              "all three": ("naswot", "synflow", "grad_norm")}
CURVE_SIZES = (20, 40, 80, 150)
CURVE_DRAWS = 5
CURVE_SCORE_SETS = ("none", "grad_norm")


def tau(a: Any, b: Any) -> float:
    return float(kendalltau(a, b).statistic)


def out_of_fold_tau(features: np.ndarray, targets: np.ndarray, model: str, shuffle_seed: int) -> float:
    from nas.search.predictor import EnsemblePredictor
    from nas.search.surrogate import SURROGATE_SIZE

    order = np.random.default_rng(shuffle_seed).permutation(len(targets))
    predicted = np.empty(len(targets))
    for fold in np.array_split(order, FOLDS):
        train = np.setdiff1d(order, fold)
        fitted = EnsemblePredictor(shuffle_seed, SURROGATE_SIZE, model).fit(features[train], targets[train])
        predicted[fold] = fitted.predict(features[fold])[0]
    return tau(predicted, targets)


def learning_curve(features: np.ndarray, targets: np.ndarray, model: str) -> dict[str, float]:
    """Mean held-out tau of the model fitted on n random entries and ranked on the others, per n."""
    from nas.search.predictor import EnsemblePredictor
    from nas.search.surrogate import SURROGATE_SIZE

    curve = {}
    for size in CURVE_SIZES:
        taus = []
        for draw in range(CURVE_DRAWS):
            order = np.random.default_rng(draw).permutation(len(targets))
            train, test = order[:size], order[size:]
            fitted = EnsemblePredictor(draw, SURROGATE_SIZE, model).fit(features[train], targets[train])
            taus.append(tau(fitted.predict(features[test])[0], targets[test]))
        curve[str(size)] = statistics.fmean(taus)
    return curve


def learning_curves(features_by_set: dict[str, np.ndarray], targets: np.ndarray) -> list[dict[str, Any]]:
    """Each ensemble model's learning curve with each of CURVE_SCORE_SETS."""
    from nas.search.predictor import ENSEMBLE_MODELS

    curves = []
    for model in ENSEMBLE_MODELS:
        for name in CURVE_SCORE_SETS:
            curves.append({"model": model, "zero_cost": name,
                           "tau_by_entries": learning_curve(features_by_set[name], targets, model)})
            print(f"{model:>13} + {name:>9}: tau after n entries "
                  + ", ".join(f"{n}: {t:.3f}" for n, t in curves[-1]["tau_by_entries"].items()), flush=True)
    return curves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(HERE / "evaluation_table.json"))
    parser.add_argument("--repeats", type=int, default=3, help="shufflings of the folds (3)")
    parser.add_argument("--out", default=str(default_path(__file__)))
    args = parser.parse_args()
    from effnas.cli import UsageError
    from nas.search.command import build_parser, config_from_args
    from nas.search.predictor import ENSEMBLE_MODELS
    from nas.search.study import search_space
    from nas.search.surrogate import TableError, entry_features, load_table, seed_noise, seed_pairs, table_search_args
    from nas.training.config import DataError
    from nas.training.data import load_task_data

    try:
        search_args = table_search_args(args.table)
        config = config_from_args(build_parser().parse_args(search_args))
        data = load_task_data(config.task, config.proxy.resolution)
        space = search_space(config, data.num_classes, data.in_channels)
        entries = load_table(args.table, space)
        noise = seed_noise(entries)
    except (TableError, UsageError, DataError, ValueError) as exc:
        print(f"surrogate_fit: {exc}", file=sys.stderr)
        return 2
    targets = np.array([entry.accuracy[0] for entry in entries])
    pairs = seed_pairs(entries)
    references = {
        "proxy seed 0 vs seed 1": {"tau": tau(*zip(*pairs)), "entries": len(pairs)},
        "FLOPs alone": {"tau": tau([entry.flops for entry in entries], targets), "entries": len(entries)},
        "params alone": {"tau": tau([entry.params for entry in entries], targets), "entries": len(entries)},
    }
    print(f"{len(entries)} entries; proxy seed-to-seed tau {references['proxy seed 0 vs seed 1']['tau']:.3f} "
          f"({len(pairs)} pairs, noise sd {noise:.4f}); FLOPs alone {references['FLOPs alone']['tau']:.3f}")
    features_by_set = {name: np.array([entry_features(entry, space, scores) for entry in entries])
                       for name, scores in SCORE_SETS.items()}
    models = []
    for model in ENSEMBLE_MODELS:
        for name, features in features_by_set.items():
            taus = [out_of_fold_tau(features, targets, model, seed) for seed in range(args.repeats)]
            models.append({"model": model, "zero_cost": name, "tau_mean": statistics.fmean(taus),
                           "tau_sd": statistics.stdev(taus) if len(taus) > 1 else 0.0, "taus": taus})
            print(f"{model:>13} + {name:>9}: held-out tau {models[-1]['tau_mean']:.3f} +- {models[-1]['tau_sd']:.3f}",
                  flush=True)
    curves = learning_curves(features_by_set, targets)
    best = max(models, key=lambda row: row["tau_mean"])
    ceiling = references["proxy seed 0 vs seed 1"]["tau"]
    write_json(args.out, {
        "table": args.table, "entries": len(entries), "folds": FOLDS, "repeats": args.repeats,
        "target": f"proxy accuracy at seed 0 of `nas.search {' '.join(search_args)}`",
        "noise_sd": noise, "references": references, "models": models,
        "learning_curve": {"draws": CURVE_DRAWS, "rows": curves},
        "best_per_zero_cost": {name: max((row for row in models if row["zero_cost"] == name),
                                         key=lambda row: row["tau_mean"])["model"] for name in SCORE_SETS},
        "chosen": {"model": best["model"], "zero_cost": best["zero_cost"], "tau": best["tau_mean"],
                   "ratio_to_seed_tau": best["tau_mean"] / ceiling,
                   "margin_over_flops": best["tau_mean"] - references["FLOPs alone"]["tau"]},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
