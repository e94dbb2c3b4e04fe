"""How well does each proxy rank architectures by how good they end up? Fashion-MNIST, 32 px, target 8M FLOPs.

Run: .venv/bin/python bench/proxy_fidelity.py [--part all|reference|proxies|report] [--archs 24]
- Architectures: `--archs` random samples of the search space (seed `--seed`), stratified over log FLOPs from 1/4
  to 2x the target, plus EfficientNet-B0.
- Reference: the final-training recipe (nas/training/engine.py, weight decay 5e-5 as when the committed figures
  were measured) for `--ref-epochs` epochs on `--ref-images` training images (5 x 20,000 = 20x the proxy's 5,000
  images), 5,000 validation images, accuracy on t10k.
- Scores: every proxy variant of PROXIES at seeds 0 and 1 (the search's task: 5,000 training images, 20% held
  out for validation, 1 thread), FLOPs, params and the zero-cost scores of nas/evaluation/zero_cost.py.
- Figures: Kendall tau and Spearman rho against the reference with bootstrap 90% intervals, top-5 overlap, each
  proxy's seed-0-vs-seed-1 tau, seconds per candidate. `--part reference --ref-seed 1` trains the references again
  at seed 1 (one FLOPs bin after another, so a partial run spans them): the report then gives the reference's own
  seed-to-seed tau, the ceiling of any proxy's. Written to bench/proxy_fidelity.json and drawn in
  bench/proxy_fidelity.png.
Every measurement is cached under bench/out/proxy_fidelity/ as soon as it is taken: a run that is stopped
continues where it was. `--part reference` and `--part proxies` can run at the same time (one core each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_json import default_path, machine_description, write_json  # noqa: E402

from nas.evaluation.proxy import train_and_evaluate  # noqa: E402
from nas.evaluation.zero_cost import ZERO_COST_SCORES, zero_cost_score  # noqa: E402
from nas.space.flops import count_flops, count_params  # noqa: E402
from nas.space.search_space import SearchSpace  # noqa: E402
from nas.space.spec import ArchSpec, spec_from_dict, spec_to_dict  # noqa: E402
from nas.training.config import ProxyConfig, TaskConfig, TrainingRecipe  # noqa: E402
from nas.training.data import TaskData, load_task_data  # noqa: E402
from nas.training.engine import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
RESOLUTION = 32
SEEDS = (0, 1)
# Proxy variants: (the proxy's data, config). The first three train on 4,000 images with 1,000 validation images, at
# about 12k image passes (3 x 4,000 or 1 x 12,000); the val4k ones validate on 4,000 images instead.
PROXIES: dict[str, tuple[TaskConfig, ProxyConfig]] = {
    # effnas's proxy before this bench: Nesterov SGD at batch 128.
    "sgd": (TaskConfig(subset=5000), ProxyConfig(optimizer="sgd", batch_size=128, lr=0.05, weight_decay=1e-5)),
    # The default since: AdamW at batch 64.
    "adamw": (TaskConfig(subset=5000), ProxyConfig(optimizer="adamw", batch_size=64, lr=3e-3, weight_decay=0.05)),
    "1ep_15k": (TaskConfig(subset=15000), ProxyConfig(epochs=1, optimizer="sgd", batch_size=64, lr=0.05,
                                                      weight_decay=1e-5, label_smoothing=0.1)),
    # Validation noise: 1,000 images give a binomial standard error of about 0.013 at 0.8 accuracy, as large as
    # many gaps between architectures; 4,000 halve it for about 8% more time (forward passes only).
    "adamw_val4k": (TaskConfig(subset=8000, val_fraction=0.5),
                    ProxyConfig(optimizer="adamw", batch_size=64, lr=3e-3, weight_decay=0.05)),
    "adamw_2ep_val4k": (TaskConfig(subset=8000, val_fraction=0.5),
                        ProxyConfig(epochs=2, optimizer="adamw", batch_size=64, lr=3e-3, weight_decay=0.05)),
}


def sample_architectures(count: int, seed: int, target: float) -> list[ArchSpec]:
    """`count` distinct random architectures, stratified over log2(FLOPs/target) in [-2, 1], then EfficientNet-B0."""
    space = SearchSpace(num_classes=10, in_channels=1, resolution=RESOLUTION)
    rng = random.Random(seed)
    bins = 6
    per_bin = math.ceil(count / bins)
    chosen: dict[int, list[ArchSpec]] = {b: [] for b in range(bins)}
    seen: set[str] = set()
    while sum(len(v) for v in chosen.values()) < bins * per_bin:
        sample = {label: rng.choice(values) for label, values in space.choices()}
        spec = space.decode(sample)
        ratio = math.log2(count_flops(spec) / target)
        b = int((ratio + 2) / 3 * bins)
        if 0 <= b < bins and len(chosen[b]) < per_bin and spec.arch_key() not in seen:
            seen.add(spec.arch_key())
            chosen[b].append(spec)
    specs = [spec for b in range(bins) for spec in chosen[b]][:count]
    return specs + [space.reference_spec()]


class Cache:
    """One JSON file per scorer: arch index -> measurement, written after each measurement."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f"{name}.json"
        self.values: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str) -> dict | None:
        return self.values.get(key)

    def put(self, key: str, value: dict) -> None:
        self.put_many({key: value})

    def put_many(self, values: dict[str, dict]) -> None:
        # Re-read first: two processes may fill one cache from both ends (--reverse).
        self.values = {**(json.loads(self.path.read_text()) if self.path.exists() else {}), **values}
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.values, indent=1))
        tmp.replace(self.path)


def restore_caches(specs: list[ArchSpec], folder: Path, committed: Path) -> int:
    """Fill missing cache entries from a results file of this bench, for the architectures it shares with `specs`
    (matched by block strings): a fresh clone then resumes from the committed measurements (the references alone
    are hours of training) instead of repeating them. Returns how many entries it filled."""
    if not committed.exists():
        return 0
    by_blocks = {" ".join(spec.block_strings()): index for index, spec in enumerate(specs)}
    missing: dict[str, dict[str, dict]] = {}
    for entry in json.loads(committed.read_text()).get("architectures", []):
        index = by_blocks.get(entry["block_strings"])
        if index is None:
            continue
        stored = {"reference": {"test_accuracy": entry["reference_test_accuracy"],
                                "seconds": entry["reference_seconds"]},
                  **entry.get("measurements", {})}
        for name, value in stored.items():
            missing.setdefault(name, {})[str(index)] = value
    filled = 0
    for name, values in missing.items():
        cache = Cache(folder, name)
        absent = {key: value for key, value in values.items() if cache.get(key) is None}
        if absent:
            cache.put_many(absent)
            filled += len(absent)
    return filled


def reference_cache_name(seed: int) -> str:
    return "reference" if seed == 0 else f"reference-seed{seed}"


def reference_order(count: int) -> list[int]:
    """Every fourth architecture first (one per FLOPs bin, EfficientNet-B0 among them), then the next fourth:
    a second-seed reference stopped part-way still spans the FLOPs range."""
    return sorted(range(count), key=lambda i: (i % 4, i))


def reference_data(threads: int, images: int = 20000) -> TaskData:
    """Fashion-MNIST at 32 px for the reference: `images` training images, 5,000 of them for validation, and t10k."""
    return load_task_data(TaskConfig(dataset="fashion-mnist", threads=threads), RESOLUTION, val_images=5000,
                          subset=images, test=True, device="cpu")


def reference_training(spec: ArchSpec, data: TaskData, seed: int, epochs: int = 5) -> dict[str, float]:
    """The reference: the final-training recipe for `epochs` epochs, then test accuracy with the weights that
    validation chose. Pinned to the recipe of bench/proxy_fidelity.json (before the 5e-4 weight-decay default):
    the caches are keyed by architecture only, so a resumed run must train its references the same way."""
    start = time.perf_counter()
    trainer = Trainer(spec, data, TrainingRecipe(epochs=epochs, flip=True, weight_decay=5e-5, seed=seed))
    for _ in range(epochs):
        trainer.fit_epoch()
    return {"test_accuracy": trainer.test_accuracy(), "val_accuracy": trainer.best["accuracy"],
            "seconds": time.perf_counter() - start}


def run_reference(specs: list[ArchSpec], folder: Path, args: argparse.Namespace) -> None:
    cache = Cache(folder, reference_cache_name(args.ref_seed))
    data = reference_data(args.threads, args.ref_images)
    order = [(i, specs[i]) for i in reference_order(len(specs))]
    for index, spec in reversed(order) if args.reverse else order:
        if cache.get(str(index)) is not None:
            continue
        measured = reference_training(spec, data, args.ref_seed, args.ref_epochs)
        cache.put(str(index), measured)
        test, seconds = measured["test_accuracy"], measured["seconds"]
        print(f"reference seed {args.ref_seed} {index + 1}/{len(specs)}: test {test:.4f} in {seconds:.0f} s",
              flush=True)


def measure_all(cache: Cache, specs: list[ArchSpec], measure, label: str) -> None:
    """`measure(spec) -> score` for every architecture not in `cache` yet, each cached with its seconds."""
    for index, spec in enumerate(specs):
        if cache.get(str(index)) is not None:
            continue
        start = time.perf_counter()
        score = measure(spec)
        cache.put(str(index), {"score": score, "seconds": time.perf_counter() - start})
        print(f"{label} {index + 1}/{len(specs)}: {score:.4f} in {time.perf_counter() - start:.1f} s", flush=True)


def run_proxies(specs: list[ArchSpec], folder: Path, args: argparse.Namespace) -> None:
    datasets: dict[tuple[int | None, float], TaskData] = {}

    def data_of(task: TaskConfig) -> TaskData:
        key = (task.subset, task.val_fraction)
        if key not in datasets:
            datasets[key] = load_task_data(replace(task, dataset="fashion-mnist", threads=args.threads), RESOLUTION,
                                           device="cpu")
        return datasets[key]

    data = data_of(TaskConfig(subset=5000))
    for name in ZERO_COST_SCORES:
        for seed in SEEDS:
            measure = lambda spec: zero_cost_score(name, spec, data, seed)  # noqa: E731
            measure_all(Cache(folder, f"zero-cost-{name}-seed{seed}"), specs, measure, f"{name} seed {seed}")
    for name in args.proxies:
        task, config = PROXIES[name]
        data = data_of(task)
        for seed in SEEDS:
            measure = lambda spec: train_and_evaluate(spec, data, replace(config, seed=seed)).accuracy  # noqa: E731
            measure_all(Cache(folder, f"proxy-{name}-seed{seed}"), specs, measure, f"{name} seed {seed}")


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    return float(kendalltau(a, b).statistic)


def _interval(scores: np.ndarray, reference: np.ndarray, statistic, rng: np.random.Generator) -> list[float]:
    values = []
    for _ in range(1000):
        pick = rng.integers(0, len(scores), len(scores))
        if len(set(reference[pick])) > 1 and len(set(scores[pick])) > 1:
            values.append(statistic(scores[pick], reference[pick]))
    return [float(np.percentile(values, 5)), float(np.percentile(values, 95))]


def _top_overlap(scores: np.ndarray, reference: np.ndarray, k: int = 5) -> int:
    return len(set(np.argsort(-scores)[:k]) & set(np.argsort(-reference)[:k]))


def _figures(scores: np.ndarray, reference: np.ndarray, seed1: np.ndarray | None, seconds: float | None,
             rng: np.random.Generator) -> dict:
    rho = lambda a, b: float(spearmanr(a, b).statistic)  # noqa: E731
    return {
        "kendall_tau": _tau(scores, reference), "kendall_tau_90": _interval(scores, reference, _tau, rng),
        "spearman_rho": rho(scores, reference), "spearman_rho_90": _interval(scores, reference, rho, rng),
        "top5_overlap": _top_overlap(scores, reference),
        "seed_to_seed_tau": None if seed1 is None else _tau(scores, seed1),
        "seconds_per_candidate": seconds,
    }


def reference_noise(folder: Path, count: int, rng: np.random.Generator) -> dict | None:
    """How far the reference repeats itself: seed 0 against seed 1 where both were trained, and the default proxy
    against each seed on the same architectures (against their mean: the rows' two-seed columns). A reference that
    does not repeat caps what any proxy can reach."""
    seed0, seed1 = Cache(folder, reference_cache_name(0)), Cache(folder, reference_cache_name(1))
    proxy = Cache(folder, "proxy-adamw-seed0")
    both = [i for i in range(count) if seed0.get(str(i)) and seed1.get(str(i)) and proxy.get(str(i))]
    if len(both) < 4:
        return None
    first = np.array([seed0.get(str(i))["test_accuracy"] for i in both])
    second = np.array([seed1.get(str(i))["test_accuracy"] for i in both])
    scores = np.array([proxy.get(str(i))["score"] for i in both])
    return {
        "architectures": both,
        "reference_seed_to_seed_tau": _tau(first, second),
        "reference_seed_to_seed_tau_90": _interval(first, second, _tau, rng),
        "mean_abs_difference": float(np.abs(first - second).mean()),
        "adamw_tau_vs_seed0": _tau(scores, first), "adamw_tau_vs_seed1": _tau(scores, second),
    }


def _setup(count: int, args: argparse.Namespace) -> dict:
    """What the report was measured with."""
    return {
        "data": "Fashion-MNIST; proxies: `subset` of the training files, `val_fraction` of them held out for "
                "validation; zero-cost scores: 5,000 of them; reference: test accuracy on t10k",
        "reference": f"final-training recipe, {args.ref_epochs} epochs on {args.ref_images} training images, "
                     "5,000 validation images, flip on, weight decay 5e-5, 32 px",
        "architectures": f"{count - 1} random (seed {args.seed}, log2 FLOPs/target in [-2, 1]) + "
                         "EfficientNet-B0",
        "target_flops": args.target_flops, "resolution": RESOLUTION,
        "flops": "multiply-accumulates of conv and linear layers at 32x32",
        "proxies": {name: {"subset": task.subset, "val_fraction": task.val_fraction, **config.__dict__}
                    for name, (task, config) in PROXIES.items()},
        "seeds": list(SEEDS), "bootstrap": "1000 resamples of the architectures, 5th-95th percentile",
        "machine": f"{machine_description()}, 1 thread per process",
    }


def report(specs: list[ArchSpec], folder: Path, args: argparse.Namespace) -> dict:
    reference_cache = Cache(folder, "reference")
    done = [i for i in range(len(specs)) if reference_cache.get(str(i)) is not None]
    reference = np.array([reference_cache.get(str(i))["test_accuracy"] for i in done])
    rng = np.random.default_rng(0)

    def column(name: str, key: str = "score") -> np.ndarray | None:
        cache = Cache(folder, name)
        if any(cache.get(str(i)) is None for i in done):
            return None
        return np.array([cache.get(str(i))[key] for i in done])

    rows: dict[str, dict] = {}
    scored: dict[str, np.ndarray] = {}
    scorer_caches = {path.stem: Cache(folder, path.stem) for path in sorted(folder.glob("*-seed*.json"))}
    for name in list(PROXIES) + [f"zero-cost-{z}" for z in ZERO_COST_SCORES]:
        prefix = name if name.startswith("zero-cost") else f"proxy-{name}"
        seed0, seed1 = column(f"{prefix}-seed0"), column(f"{prefix}-seed1")
        if seed0 is None:
            continue
        seconds = column(f"{prefix}-seed0", "seconds")
        rows[name] = _figures(seed0, reference, seed1, float(seconds.mean()), rng)
        scored[name] = seed0
        if seed1 is not None and not name.startswith("zero-cost"):
            rows[f"{name} (mean of 2 seeds)"] = _figures((seed0 + seed1) / 2, reference, None,
                                                         float(seconds.mean() * 2), rng)
            scored[f"{name} (mean of 2 seeds)"] = (seed0 + seed1) / 2
    flops = np.array([float(count_flops(specs[i])) for i in done])
    params = np.array([float(count_params(replace(specs[i], num_classes=10, in_channels=1))) for i in done])
    rows["flops"] = _figures(flops, reference, None, 0.0, rng)
    rows["params"] = _figures(params, reference, None, 0.0, rng)
    scored.update(flops=flops, params=params)
    second_reference = column(reference_cache_name(1), "test_accuracy")
    if second_reference is not None:
        # The single-seed reference repeats itself only so well (see reference_noise): the mean of two seeds is
        # the steadier thing to rank against. Its own generator leaves the intervals above as they were.
        two_seed = (reference + second_reference) / 2
        two_seed_rng = np.random.default_rng(1)
        for name, scores in scored.items():
            rows[name]["kendall_tau_vs_two_seed_reference"] = _tau(scores, two_seed)
            rows[name]["kendall_tau_vs_two_seed_reference_90"] = _interval(scores, two_seed, _tau, two_seed_rng)
    b0 = len(specs) - 1
    return {
        "reference_noise": reference_noise(folder, len(specs), rng),
        "setup": _setup(len(specs), args),
        "architectures_measured": len(done),
        "architectures": [
            {"index": i, "block_strings": " ".join(specs[i].block_strings()), "flops": int(flops[k]),
             "params": int(params[k]), "reference_test_accuracy": float(reference[k]), "efficientnet_b0": i == b0,
             "reference_seconds": reference_cache.get(str(i))["seconds"],
             "measurements": {name: cache.get(str(i)) for name, cache in scorer_caches.items()
                              if cache.get(str(i)) is not None}}
            for k, i in enumerate(done)
        ],
        "scores": rows,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["scores"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(10.5, 4.5))
    # More scores than the default ten colours: two of them would share one.
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for name in names:
        row = rows[name]
        low, high = row["kendall_tau_90"]
        seconds = max(row["seconds_per_candidate"] or 0.0, 0.01)
        drawn = ax.errorbar(seconds, row["kendall_tau"],
                            yerr=[[row["kendall_tau"] - low], [high - row["kendall_tau"]]], fmt="o", capsize=3,
                            label=f"{name} ({row['kendall_tau']:.2f})")
        if "kendall_tau_vs_two_seed_reference" in row:
            ax.plot(seconds * 1.08, row["kendall_tau_vs_two_seed_reference"], marker="D", fillstyle="none",
                    linestyle="none", color=drawn.lines[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("seconds per candidate (1 CPU thread; FLOPs and params: 0.01)")
    ax.set_ylabel("Kendall tau vs reference (90% bootstrap)\nhollow diamond: vs mean of 2 reference seeds")
    ax.axhline(0.6, color="grey", linestyle=":", linewidth=1)
    # Proxy variants of one cost sit on top of each other: a legend keeps them apart where labels would not.
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"Proxy fidelity, Fashion-MNIST 32 px, {results['architectures_measured']} architectures")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "reference", "proxies", "report"), default="all")
    parser.add_argument("--archs", type=int, default=24, help="random architectures besides EfficientNet-B0 (24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architecture sample (0)")
    parser.add_argument("--target-flops", type=float, default=8e6, help="FLOPs target at 32 px (8M)")
    parser.add_argument("--ref-epochs", type=int, default=5, help="reference training epochs (5)")
    parser.add_argument("--ref-images", type=int, default=20000, help="reference training images (20000)")
    parser.add_argument("--proxies", default=",".join(PROXIES), help=f"variants to score ({','.join(PROXIES)})")
    parser.add_argument("--ref-seed", type=int, default=0,
                        help="seed of the references to train (0; 1 measures the reference's own seed noise)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    parser.add_argument("--reverse", action="store_true",
                        help="train the references from the last architecture back (a second process beside a first)")
    parser.add_argument("--out", default=str(default_path(__file__)))
    parser.add_argument("--restore", default=str(default_path(__file__)),
                        help="results file whose measurements fill missing cache entries (bench/proxy_fidelity.json)")
    args = parser.parse_args()
    args.proxies = [name for name in args.proxies.split(",") if name]
    folder = HERE / "out" / "proxy_fidelity"
    folder.mkdir(parents=True, exist_ok=True)
    specs = sample_architectures(args.archs, args.seed, args.target_flops)
    (folder / "architectures.json").write_text(json.dumps([spec_to_dict(s) for s in specs], indent=1))
    assert [spec_from_dict(spec_to_dict(s)) for s in specs] == specs
    restored = restore_caches(specs, folder, Path(args.restore))
    if restored:
        print(f"{restored} measurements restored from {args.restore}")
    torch.set_num_threads(args.threads)
    if args.part in ("all", "proxies"):
        run_proxies(specs, folder, args)
    if args.part in ("all", "reference"):
        run_reference(specs, folder, args)
    if args.part in ("all", "report"):
        results = report(specs, folder, args)
        write_json(args.out, results)
        plot(results, Path(args.out).with_suffix(".png"))
        print(f"{'score':34}{'tau':>7}{'90% interval':>16}{'rho':>7}{'top5':>6}{'seed tau':>9}{'s/cand':>8}"
              f"{'tau vs 2-seed reference':>32}")
        for name, row in results["scores"].items():
            seed_tau = "" if row["seed_to_seed_tau"] is None else f"{row['seed_to_seed_tau']:.2f}"
            low, high = row["kendall_tau_90"]
            two_seed = ""
            if "kendall_tau_vs_two_seed_reference" in row:
                two_low, two_high = row["kendall_tau_vs_two_seed_reference_90"]
                two_seed = f"{row['kendall_tau_vs_two_seed_reference']:.2f} [{two_low:.2f}, {two_high:.2f}]"
            print(f"{name:34}{row['kendall_tau']:7.2f}{f'[{low:.2f}, {high:.2f}]':>16}{row['spearman_rho']:7.2f}"
                  f"{row['top5_overlap']:6d}{seed_tau:>9}{row['seconds_per_candidate']:8.1f}{two_seed:>32}")
        noise = results["reference_noise"]
        if noise is not None:
            low, high = noise["reference_seed_to_seed_tau_90"]
            print(f"reference seed 0 vs seed 1 on {len(noise['architectures'])} architectures: tau "
                  f"{noise['reference_seed_to_seed_tau']:.2f} [{low:.2f}, {high:.2f}], mean |difference| "
                  f"{noise['mean_abs_difference']:.4f}; adamw proxy vs seed 0 / seed 1: "
                  f"{noise['adamw_tau_vs_seed0']:.2f} / {noise['adamw_tau_vs_seed1']:.2f}")
        print(f"{results['architectures_measured']} architectures; results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
