"""How well a supernet's scores rank the evaluation table's architectures, at several supernet budgets.

Run: .venv/bin/python bench/supernet_fidelity.py [--budgets 1,2,4] [--kernel-transform] [--limit N]

For each budget (supernet epochs), a supernet of the table's search space is trained as `nas.search --evaluator
supernet --supernet-epochs N` trains it (the table's task: Fashion-MNIST, 32 px, the stem stride its search gets,
the proxy's optimizer, the sandwich rule), and every table entry is scored as a supernet search scores a
candidate: its path, BatchNorm statistics re-estimated on the first training images, accuracy on the search's
validation split. Reported per budget: Kendall tau of the scores against the table's seed-0 proxy accuracy and
against the two-seed mean where there is one; seconds per supernet epoch; seconds per scored candidate (median
and 90th percentile). Beside them, the references: the proxy's own seed-to-seed tau and FLOPs alone (from the
table), and the surrogate's held-out tau (bench/surrogate_fit.json).

Each budget trains its own supernet (a one-cycle schedule depends on the number of epochs). Resumable: the JSON
keeps every finished budget, and the supernet of an unfinished one continues from its checkpoint under
bench/out/supernet_fidelity/ on the same machine. Budget on 2 cores: about 7 minutes per supernet epoch and 15
minutes per scoring of the 404 entries; 1,2,4 takes about 1.5 hours. Results: bench/supernet_fidelity.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_json import default_path, read_json, write_json
from scipy.stats import kendalltau

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
OUT = HERE / "out" / "supernet_fidelity"
TABLE = HERE / "evaluation_table.json"


def tau(a: list[float], b: list[float]) -> float:
    return float(kendalltau(a, b).statistic)


def table_task(table: dict[str, Any]):
    """The search configuration, data and space of the table's task."""
    from nas.search.command import build_parser, config_from_args
    from nas.search.study import search_space
    from nas.training.data import load_task_data

    args = build_parser().parse_args(table["setup"]["search"].split()[1:] + ["--evaluator", "supernet"])
    config = config_from_args(args)
    data = load_task_data(config.task, config.proxy.resolution)
    return config, data, search_space(config, data.num_classes, data.in_channels)


def trained_supernet(config, data, space, epochs: int, kernel_transform: bool, log) -> tuple[Any, float]:
    """The supernet of `epochs` epochs (continued from its checkpoint) and its seconds per epoch."""
    from dataclasses import replace

    from nas.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from nas.training.supernet import SupernetTrainer

    supernet = replace(config.supernet, epochs=epochs, kernel_transform=kernel_transform)
    trainer = SupernetTrainer(space, data, config.proxy, supernet)
    folder = OUT / f"e{epochs}{'-transform' if kernel_transform else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / CHECKPOINT_NAME
    curve: list[dict[str, Any]] = []
    if checkpoint.is_file():
        state, curve = load_checkpoint(checkpoint, trainer.device)
        trainer.load_state(state)
    while trainer.epoch < epochs:
        start = time.monotonic()
        trainer.train_epoch()
        curve.append({"epoch": trainer.epoch, "seconds": time.monotonic() - start})
        save_checkpoint(checkpoint, trainer.state(), curve)
        log(f"budget {epochs}: epoch {trainer.epoch}/{epochs} in {curve[-1]['seconds']:.0f} s")
    return trainer, statistics.mean(point["seconds"] for point in curve)


def score_entries(trainer, space, entries: list[dict[str, Any]], log) -> tuple[list[float], list[float]]:
    """Supernet accuracy and scoring seconds per entry."""
    scores, seconds = [], []
    started = time.monotonic()
    for index, entry in enumerate(entries):
        start = time.perf_counter()
        scores.append(trainer.path_accuracy(space.decode(entry["sample"])))
        seconds.append(time.perf_counter() - start)
        if (index + 1) % 50 == 0:
            left = (time.monotonic() - started) / (index + 1) * (len(entries) - index - 1)
            log(f"scored {index + 1}/{len(entries)}, ~{left / 60:.0f} min left")
    return scores, seconds


def budget_result(entries: list[dict[str, Any]], scores: list[float], seconds: list[float],
                  epoch_seconds: float) -> dict[str, Any]:
    seed0 = [entry["accuracy"]["0"] for entry in entries]
    twice = [i for i, entry in enumerate(entries) if "1" in entry["accuracy"]]
    means = [statistics.mean(entries[i]["accuracy"].values()) for i in twice]
    ordered = sorted(seconds)
    return {
        "tau_seed0": tau(scores, seed0), "entries": len(entries),
        "tau_two_seed_mean": tau([scores[i] for i in twice], means), "entries_two_seeds": len(twice),
        "seconds_per_epoch": epoch_seconds,
        "seconds_per_candidate": {"median": statistics.median(seconds), "p90": ordered[int(0.9 * (len(ordered) - 1))]},
        "scores": [round(score, 4) for score in scores],
    }


def references(entries: list[dict[str, Any]]) -> dict[str, Any]:
    twice = [entry for entry in entries if "1" in entry["accuracy"]]
    surrogate = read_json(HERE / "surrogate_fit.json")["chosen"]
    return {
        "proxy seed 0 vs seed 1": {"tau": tau([e["accuracy"]["0"] for e in twice], [e["accuracy"]["1"] for e in twice]),
                                   "entries": len(twice)},
        "surrogate held-out (bench/surrogate_fit.json)": {"tau": surrogate["tau"], "model": surrogate["model"]},
        "FLOPs alone": {"tau": tau([e["flops"] for e in entries], [e["accuracy"]["0"] for e in entries]),
                        "entries": len(entries)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,2,4", help="supernet epochs, comma-separated (1,2,4)")
    parser.add_argument("--kernel-transform", action="store_true", help="with OFA's learned kernel transform")
    parser.add_argument("--limit", type=int, help="score only the first N table entries (a quick look)")
    parser.add_argument("--out", type=Path, default=default_path(__file__))
    args = parser.parse_args()
    budgets = [int(text) for text in args.budgets.split(",")]
    table = read_json(TABLE)
    entries = table["entries"][: args.limit]
    results = read_json(args.out) if args.out.is_file() else {}
    kind = "transform" if args.kernel_transform else "centre"
    done = results.setdefault("budgets", {}).setdefault(kind, {})
    config, data, space = table_task(table)
    results.update(table=str(TABLE.relative_to(HERE.parent)), task=table["setup"]["search"],
                   stem_stride=space.stem_stride, calibration_images=config.supernet.calibration_images,
                   references=references(entries))

    def log(text: str) -> None:
        print(f"[supernet_fidelity {time.strftime('%H:%M:%S')}] {text}", flush=True)

    for epochs in budgets:
        if str(epochs) in done and done[str(epochs)]["entries"] == len(entries):
            continue
        trainer, epoch_seconds = trained_supernet(config, data, space, epochs, args.kernel_transform, log)
        scores, seconds = score_entries(trainer, space, entries, log)
        done[str(epochs)] = budget_result(entries, scores, seconds, epoch_seconds)
        write_json(args.out, results)
        row = done[str(epochs)]
        log(f"budget {epochs} ({kind}): tau {row['tau_seed0']:.3f} against seed 0, {row['tau_two_seed_mean']:.3f} "
            f"against the two-seed mean; {row['seconds_per_candidate']['median']:.2f} s per candidate")


if __name__ == "__main__":
    main()
