"""How well a supernet's scores rank the evaluation table's architectures, at several supernet budgets.

Run: .venv/bin/python bench/supernet_fidelity.py [--budgets 1,2,4] [--kernel-transform] [--limit N] [--table PATH]
     .venv/bin/python bench/supernet_fidelity.py --interference [--budgets 1]
     .venv/bin/python bench/supernet_fidelity.py --paths [--budgets 1] [--kernel-transform]
     .venv/bin/python bench/supernet_fidelity.py --dimensions [--budgets 4] [--kernel-transform]
     the budgets, --paths or --dimensions with --uniform-paths N: single-path one-shot's training instead

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

`--interference` asks why paths score near chance: for the whole space and for sub-spaces pinned as `nas.search
--fix` pins them (every stage's skip the identity, every block an MBConv of ratio 6, both, and both with ratio 3),
it trains the supernet of the sub-space at the same budget and scores 15 paths drawn uniformly from it. A
sub-space whose paths score far above the whole space's shows which choices' weights interfere. About 5 minutes
per sub-space and epoch on 2 cores.

`--paths` asks whether the supernet learned at all and where a candidate's scoring time goes: on the whole-space
supernet of the first budget it scores the two paths the sandwich rule trains every step (the largest on the
labels, the smallest distilled), EfficientNet-B0's path and 15 paths drawn uniformly, each with its FLOPs and the
seconds of its BatchNorm re-estimation and of its validation apart. About 2 minutes beside the supernet's training.

`--dimensions` asks which kind of sharing fails: on the whole-space supernet of the first budget, it scores the
sandwich's largest and smallest paths, then each with one dimension set to each of its other values in every stage
(narrower, the other kernel, no SE, fewer layers, no skip, another block type). A path whose score falls far below
its sandwich path's shows a sharing the training does not serve. About 2 minutes beside the supernet's training.

`--uniform-paths N` trains the supernet without the sandwich: each step trains N uniform draws on the labels, as
single-path one-shot (SPOS) does, so every step's compute goes to the paths a search scores. Its results sit under
keys that say so, its supernets in folders of their own.

`--table PATH` measures on another evaluation table (one of a pinned sub-space, made by bench/evaluation_table.py
with `-- ... --fix ...`); its results go under `other_tables` in the same JSON, its supernets under a folder of
its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
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


def uniform_trainer(space, data, proxy, supernet):
    """A supernet trainer that replaces the sandwich rule by single-path one-shot's: each step trains
    `supernet.random_paths` uniform draws on the labels, with no largest path and no distillation."""
    import torch
    import torch.nn.functional as F

    from nas.training.supernet import SupernetTrainer

    class UniformSupernetTrainer(SupernetTrainer):
        def backward(self, images, labels, step):
            losses = []
            for _ in range(self.config.random_paths):
                with self._autocast():
                    loss = F.cross_entropy(self.model(images, self.random_path()), labels)
                self.check_finite(loss, step)
                loss.backward()
                losses.append(loss.detach())
            return torch.stack(losses).mean()

    return UniformSupernetTrainer(space, data, proxy, supernet)


def trained_supernet(config, data, space, epochs: int, kernel_transform: bool, log, folder: Path = OUT,
                     uniform_paths: int | None = None) -> tuple[Any, float]:
    """The supernet of `epochs` epochs (continued from its checkpoint) and its seconds per epoch; sandwich-trained,
    or with `uniform_paths` uniform draws per step on the labels."""
    from nas.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from nas.training.supernet import SupernetTrainer

    supernet = replace(config.supernet, epochs=epochs, kernel_transform=kernel_transform)
    if uniform_paths:
        trainer = uniform_trainer(space, data, config.proxy, replace(supernet, random_paths=uniform_paths))
    else:
        trainer = SupernetTrainer(space, data, config.proxy, supernet)
    sampling = f"-uniform{uniform_paths}" if uniform_paths else ""
    folder = folder / f"e{epochs}{'-transform' if kernel_transform else ''}{sampling}"
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


INTERFERENCE_SUBSPACES = {
    "whole space": [],
    "skip=identity": ["skip=identity"],
    "block=mbconv_e6": ["block=mbconv_e6"],
    "block=mbconv_e6 skip=identity": ["block=mbconv_e6", "skip=identity"],
    # The sub-space of the pinned evaluation table: at 8M and 32 px, 199 of 200 uniform draws of the MBConv-6
    # sub-space are over the 4x FLOPs cap, 22 of 200 of this one.
    "block=mbconv_e3 skip=identity": ["block=mbconv_e3", "skip=identity"],
}
INTERFERENCE_PATHS = 15


def interference(config, data, epochs: int, log, measured: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Per sub-space not yet `measured`: the accuracy of paths drawn uniformly from it on its own supernet of
    `epochs` epochs."""
    import torch

    from nas.search.study import search_space
    from nas.space.search_space import parse_fixed

    for name, pins in INTERFERENCE_SUBSPACES.items():
        if name in measured:
            continue
        pinned = replace(config, fixed=parse_fixed(pins))
        space = search_space(pinned, data.num_classes, data.in_channels)
        trainer, epoch_seconds = trained_supernet(pinned, data, space, epochs, False, log,
                                                  folder=OUT / f"interference-{'-'.join(pins)}" if pins else OUT)
        generator = torch.Generator().manual_seed(0)
        scores = [trainer.path_accuracy(space.decode(trainer.random_sample(generator)))
                  for _ in range(INTERFERENCE_PATHS)]
        row = {"pins": pins, "paths": len(scores), "mean": statistics.mean(scores), "sd": statistics.stdev(scores),
               "min": min(scores), "max": max(scores), "seconds_per_epoch": epoch_seconds}
        log(f"{name}: paths score {row['mean']:.3f} +- {row['sd']:.3f} after {epochs} epochs")
        yield name, row


def sandwich_paths(config, data, space, epochs: int, kernel_transform: bool, log,
                   uniform_paths: int | None = None) -> dict[str, Any]:
    """On the whole-space supernet of `epochs` epochs: per path (the sandwich's largest and smallest,
    EfficientNet-B0's, INTERFERENCE_PATHS uniform draws) its accuracy, FLOPs and the seconds of its BatchNorm
    re-estimation and of its validation, timed apart as `SupernetTrainer.path_accuracy` runs them."""
    import torch

    from nas.space.flops import count_flops
    from nas.space.supernet import extreme_samples

    trainer, epoch_seconds = trained_supernet(config, data, space, epochs, kernel_transform, log,
                                              uniform_paths=uniform_paths)
    largest, smallest = extreme_samples(space)
    generator = torch.Generator().manual_seed(0)
    trained = ("not trained as such", "not trained as such") if uniform_paths else ("on the labels", "distilled")
    samples = {f"largest (sandwich, {trained[0]})": largest, f"smallest (sandwich, {trained[1]})": smallest,
               "EfficientNet-B0": space.b0_sample(),
               **{f"uniform {index + 1}": trainer.random_sample(generator) for index in range(INTERFERENCE_PATHS)}}
    paths = {}
    for name, sample in samples.items():
        spec = space.decode(sample)
        network = trainer.path_network(spec)
        start = time.perf_counter()
        trainer.recalibrate(network, config.supernet.calibration_images)
        recalibrated = time.perf_counter()
        accuracy = trainer.accuracy(network, data.val)
        paths[name] = {"accuracy": accuracy, "flops": count_flops(spec),
                       "recalibration_seconds": recalibrated - start,
                       "validation_seconds": time.perf_counter() - recalibrated}
        log(f"{name}: {accuracy:.3f}, {paths[name]['flops'] / 1e6:.1f}M FLOPs")
    uniform = [row for name, row in paths.items() if name.startswith("uniform")]
    images = config.supernet.calibration_images + len(data.val)
    seconds = [row["recalibration_seconds"] + row["validation_seconds"] for row in uniform]
    return {"paths": paths, "seconds_per_epoch": epoch_seconds, "images_per_candidate": images,
            "uniform_accuracy": {"mean": statistics.mean(row["accuracy"] for row in uniform),
                                 "sd": statistics.stdev(row["accuracy"] for row in uniform)},
            # Scoring is a forward pass over `images` images: its speed in multiply-accumulates per second says
            # whether the time goes to the network's arithmetic or to overhead around it.
            "gmacs_per_second": statistics.median(row["flops"] * images / s / 1e9
                                                  for row, s in zip(uniform, seconds))}


def dimension_probes(config, data, space, epochs: int, kernel_transform: bool, log,
                     uniform_paths: int | None = None) -> dict[str, Any]:
    """On the whole-space supernet of `epochs` epochs: the sandwich's largest and smallest paths, and each of
    them with one dimension moved to each of its other values in every stage, with their accuracies."""
    from nas.space.supernet import extreme_samples

    trainer, epoch_seconds = trained_supernet(config, data, space, epochs, kernel_transform, log,
                                              uniform_paths=uniform_paths)
    choices = dict(space.choices())
    probes: dict[str, dict[str, float]] = {}
    for name, base in zip(("largest", "smallest"), extreme_samples(space)):
        row = {"sandwich path": trainer.path_accuracy(space.decode(base))}
        for dimension in dict.fromkeys(label.split("_", 1)[1] for label in base):
            labels = [label for label in base if label.endswith(f"_{dimension}")]
            values = dict.fromkeys(value for label in labels for value in choices[label])
            for value in values:
                moved = {**base, **{label: value for label in labels if value in choices[label]}}
                if moved != base:
                    row[f"{dimension}={value}"] = trainer.path_accuracy(space.decode(moved))
                    log(f"{name}, {dimension}={value}: {row[f'{dimension}={value}']:.3f}")
        probes[name] = row
    return {"paths": probes, "seconds_per_epoch": epoch_seconds}


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


def references(entries: list[dict[str, Any]], surrogate: bool) -> dict[str, Any]:
    """The proxy's seed-to-seed tau and FLOPs alone; with `surrogate`, the surrogate fitted on this table."""
    twice = [entry for entry in entries if "1" in entry["accuracy"]]
    found = {
        "proxy seed 0 vs seed 1": {"tau": tau([e["accuracy"]["0"] for e in twice], [e["accuracy"]["1"] for e in twice]),
                                   "entries": len(twice)},
        "FLOPs alone": {"tau": tau([e["flops"] for e in entries], [e["accuracy"]["0"] for e in entries]),
                        "entries": len(entries)},
    }
    if surrogate:
        chosen = read_json(HERE / "surrogate_fit.json")["chosen"]
        found["surrogate held-out (bench/surrogate_fit.json)"] = {"tau": chosen["tau"], "model": chosen["model"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,2,4", help="supernet epochs, comma-separated (1,2,4)")
    parser.add_argument("--kernel-transform", action="store_true", help="with OFA's learned kernel transform")
    parser.add_argument("--interference", action="store_true",
                        help="score paths of pinned sub-spaces on their own supernets (at the first budget)")
    parser.add_argument("--paths", action="store_true",
                        help="score the sandwich's own paths, B0's and uniform draws, timing each scoring's parts")
    parser.add_argument("--dimensions", action="store_true",
                        help="score the sandwich's paths with one dimension moved, to see which sharing fails")
    parser.add_argument("--uniform-paths", type=int, metavar="N",
                        help="train the supernet by single-path one-shot's rule instead of the sandwich: N uniform "
                        "draws per step on the labels")
    parser.add_argument("--limit", type=int, help="score only the first N table entries (a quick look)")
    parser.add_argument("--table", type=Path, default=TABLE, help="the evaluation table (bench/evaluation_table.json)")
    parser.add_argument("--out", type=Path, default=default_path(__file__))
    args = parser.parse_args()
    if args.interference and args.uniform_paths:
        parser.error("--interference measures the sandwich's supernets; it does not go with --uniform-paths")
    budgets = [int(text) for text in args.budgets.split(",")]
    table_path = args.table.resolve()
    table = read_json(table_path)
    entries = table["entries"][: args.limit]
    results = read_json(args.out) if args.out.is_file() else {}
    name = str(table_path.relative_to(HERE.parent))
    main_table = table_path == TABLE
    section = results if main_table else results.setdefault("other_tables", {}).setdefault(name, {})
    folder = OUT if main_table else OUT / table_path.stem
    config, data, space = table_task(table)
    variant = f", uniform sampling of {args.uniform_paths} paths" if args.uniform_paths else ""
    kind = ("transform" if args.kernel_transform else "centre") + variant
    done = section.setdefault("budgets", {}).setdefault(kind, {})
    # The file's provenance names the last run; each part keeps the command that measured it.
    command = " ".join(["bench/supernet_fidelity.py", *sys.argv[1:]])
    section.update(table=name, task=table["setup"]["search"], stem_stride=space.stem_stride,
                   calibration_images=config.supernet.calibration_images,
                   references=references(entries, surrogate=main_table))

    def log(text: str) -> None:
        print(f"[supernet_fidelity {time.strftime('%H:%M:%S')}] {text}", flush=True)

    if args.paths:
        key = f"{budgets[0]} epochs" + (", kernel transform" if args.kernel_transform else "") + variant
        results.setdefault("paths", {})[key] = {
            **sandwich_paths(config, data, space, budgets[0], args.kernel_transform, log, args.uniform_paths),
            "command": command}
        write_json(args.out, results)
        return
    if args.dimensions:
        key = f"{budgets[0]} epochs, kernel {kind}"
        results.setdefault("dimensions", {})[key] = {
            **dimension_probes(config, data, space, budgets[0], args.kernel_transform, log, args.uniform_paths),
            "command": command}
        write_json(args.out, results)
        return
    if args.interference:
        measured = results.setdefault("interference", {}).setdefault(f"{budgets[0]} epochs", {})
        for name, row in interference(config, data, budgets[0], log, set(measured)):
            measured[name] = {**row, "command": command}
            write_json(args.out, results)
        return
    for epochs in budgets:
        if str(epochs) in done and done[str(epochs)]["entries"] == len(entries):
            continue
        trainer, epoch_seconds = trained_supernet(config, data, space, epochs, args.kernel_transform, log, folder,
                                                  args.uniform_paths)
        scores, seconds = score_entries(trainer, space, entries, log)
        done[str(epochs)] = {**budget_result(entries, scores, seconds, epoch_seconds), "command": command}
        write_json(args.out, results)
        row = done[str(epochs)]
        log(f"budget {epochs} ({kind}): tau {row['tau_seed0']:.3f} against seed 0, {row['tau_two_seed_mean']:.3f} "
            f"against the two-seed mean; {row['seconds_per_candidate']['median']:.2f} s per candidate")


if __name__ == "__main__":
    main()
