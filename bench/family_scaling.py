"""Does the found family beat EfficientNet's at every FLOPs budget, and which scaling rule holds as training grows?
The paper's Figure 1 and Table 3 on Fashion-MNIST, trained, with seeds, at three budgets.

Run: .venv/bin/python bench/family_scaling.py [--plan short|medium|full] [--commit] [--stop-after 2h]
                                               [--device auto] [--concurrent N]

Every step is an effnas command, as a user types it, into WORK_DIR/family_scaling.db (bench/out by default):
1. `nas.search --dataset fashion-mnist --resolution 32 --target-flops 8M --time-budget 9m` (stem stride auto: 1)
   finds the B0 (its spec is kept in the JSON, so a rerun elsewhere grows the same family);
2. `scaling.grow` grows B0-B2 of: the found B0 by the paper's coefficients, EfficientNet-B0 by its official table
   at the same 32 px base (its own stride-2 stem), the found B0 by width, depth and resolution alone, and the
   found B0 by grid-fitted coefficients (`--coefficients grid --grid-scoring training`), and the found B0 by the
   paper's coefficients with no member above the data's stored size (`--max-resolution native`: B2 at 32 px,
   not 35, where the extra pixels would only be upsampled);
3. `scaling.train --family ID --members Bk --seeds S` trains each network with each seed, one run per call, with
   one recipe (below) on Fashion-MNIST (validation images held out of the training files; test accuracy on t10k).

Plans (the networks and seeds) and their budgets (training images x epochs):
- `short` (the default; a few CPU hours, done): 6,000 images x 8 epochs for every network at seeds 0 and 1, a third
  seed wherever two compared networks overlap, and `long`, 24,000 images x 8 epochs, for the found B0-B2. At this
  budget the networks are far from trained (0.78 test accuracy).
- `medium` (about 18 hours on 2 cores, resumable): all 55,000 images (5,000 held out) x 15 epochs, seeds 0 and 1,
  for the networks that decide the rule at phi = 2: the found B0, the found B2 by the paper's coefficients, by
  width alone and by the short grid, and EfficientNet-B0; then the grid refitted with 15-epoch runs (the short
  grid's 3,000 images), to see whether the chosen coefficients change with the budget; then phi = 1 of the two
  best rules if their B2s lie within each other's spread, or a third seed of the best B2 and of every B2 it does
  not beat by twice the spread; last the resolution rule's B2 (the 15-epoch grid's choice) and the paper's B2
  capped at 32 px. Bello et al. 2021 found width scaling winning at 10 epochs and depth at 350: this is the check
  that our short-budget answer holds beyond the short regime.
- `full` (a GPU's job): 55,000 images x 30 epochs, seeds 0-2, phi 0-2 of every rule's family and of EfficientNet's
  official table. `--concurrent N` trains N runs at once (separate processes sharing the device); the bench prints
  an estimate of its wall time, from a probe of 10 training steps of each network, before it starts:
      python bench/family_scaling.py --plan full --device cuda --concurrent auto --commit
  (`auto` first times 1, 2, 4, ... probe processes training the found B0 at once and takes the count past which
  the total images per second rises by less than 10 %.)
`--budget` trains a medium or full plan at another budget (`tiny`, 200 images x 2 epochs, checks the bench itself);
`--networks FAMILY/Bk,...` keeps only those networks of the plan.

`--report` recomputes the findings and the PNG from the JSON alone.

Results go to bench/family_scaling.json (per network and budget: family, rule, member, FLOPs, params, resolution,
per-seed test accuracies, seconds and wall-clock start and end) and bench/family_scaling.png (test accuracy
against FLOPs, mean +- sd, one panel per budget). Each run is written as it ends (and committed with --commit); a
rerun restores finished runs from the JSON instead of training them again, and `scaling.train` continues a run
stopped half-way from its last epoch's checkpoint in WORK_DIR, so the bench can span sessions and machines. A
medium run outlasts a session: stop the bench with Ctrl-C after an epoch, then `--save-partial --commit` copies the
work dir's database and the stopped runs' checkpoints into bench/family_scaling_partial/ (committed, 18 MB for a
medium B2), which a fresh clone's first run puts back into its empty WORK_DIR before it continues.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import partial_runs
from bench_json import default_path, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from effnas.cli import parse_duration  # noqa: E402
from scaling.compare import seed_spread  # noqa: E402

SEARCH = ["nas.search", "--resolution", "32", "--target-flops", "8M", "--trials", "40", "--time-budget", "9m"]
# subset None: every training image the validation split leaves (Fashion-MNIST: 60,000 - 5,000).
BUDGETS: dict[str, dict[str, Any]] = {
    "short": {"subset": 6000, "epochs": 8, "val_images": 2000},
    "long": {"subset": 24000, "epochs": 8, "val_images": 2000},
    "medium": {"subset": None, "epochs": 15, "val_images": 5000},
    "full": {"subset": None, "epochs": 30, "val_images": 5000},
    "tiny": {"subset": 200, "epochs": 2, "val_images": 100},
}
TRAINING_FILE_IMAGES = {"fashion-mnist": 60_000}
# How each family is grown; "found" stands for the found B0's spec file, DATA for the bench's data set.
GRID_DATA = ["--grid-scoring", "training", "--grid-subset", "3000", "--grid-val-images", "2000"]
FAMILIES = {
    "found-paper": ["--arch", "found", "--rule", "compound", "--coefficients", "paper"],
    "efficientnet-official": ["--baseline", "efficientnet-b0", "--coefficients", "official", "--resolution", "32"],
    "found-width": ["--arch", "found", "--rule", "width"],
    "found-depth": ["--arch", "found", "--rule", "depth"],
    "found-resolution": ["--arch", "found", "--rule", "resolution"],
    "found-grid": ["--arch", "found", "--coefficients", "grid", *GRID_DATA, "--grid-epochs", "3"],
    # The same grid scored by runs of the medium budget's epochs: do the chosen coefficients move with the budget?
    "found-grid-medium": ["--arch", "found", "--coefficients", "grid", *GRID_DATA, "--grid-epochs", "15"],
    # The paper's rule with resolution kept at the data's stored size (B0's 32 px, Fashion-MNIST storing 28):
    # does the resolution that only upsamples buy accuracy, or only FLOPs?
    "found-paper-capped": ["--arch", "found", "--rule", "compound", "--coefficients", "paper",
                           "--max-resolution", "native"],
}
GRID_FAMILIES = {"found-grid": "grid", "found-grid-medium": "grid_medium"}
# Families whose growth reads the bench's data set.
DATA_FAMILIES = {*GRID_FAMILIES, "found-paper-capped"}
RULE_FAMILIES = ("found-paper", "found-width", "found-depth", "found-resolution", "found-grid")
# (family, member, budget), most important first. A single-dimension or grid family's B0 is the found B0 itself.
SHORT_PLAN = [
    *[("found-paper", m, "short") for m in ("B0", "B1", "B2")],
    *[("efficientnet-official", m, "short") for m in ("B0", "B1", "B2")],
    *[(f"found-{rule}", "B2", "short") for rule in ("width", "depth", "resolution")],
    *[("found-paper", m, "long") for m in ("B0", "B1", "B2")],
    *[("found-grid", m, "short") for m in ("B1", "B2")],
    ("found-paper-capped", "B2", "short"),
]
# Trained after the third seeds, if time allows (the issue asks for them only then).
SHORT_OPTIONAL = [(f"found-{rule}", "B1", "short") for rule in ("width", "depth", "resolution")]
SEEDS = (0, 1)
THIRD_SEED = 2
MEDIUM_NETWORKS = [("found-paper", "B0"), ("found-width", "B2"), ("found-paper", "B2"),
                   ("efficientnet-official", "B0"), ("found-grid", "B2")]
# Trained last. The grid refitted with 15-epoch runs chose resolution alone (alpha 1.0, beta 1.0, gamma 1.4), where
# the 3-epoch grid chose width alone: the resolution rule's B2 is that choice up to rounding, so its medium figure
# says whether the longer grid's answer holds at the medium budget. Capping was measured at the short budget
# already, and the issue asks only to consider it.
MEDIUM_OPTIONAL = [("found-resolution", "B2"), ("found-paper-capped", "B2")]
FULL_NETWORKS = [("found-paper", "B0"), ("efficientnet-official", "B0"),
                 *[(family, m) for m in ("B1", "B2") for family in (*RULE_FAMILIES, "efficientnet-official")]]
FULL_SEEDS = (0, 1, 2)
PROBE_STEPS = 10
PROBE_BATCH = 128
# Long enough that runs started together overlap for most of their timing.
CONCURRENCY_PROBE_STEPS = 40
MAX_CONCURRENT = 16


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.folder = Path(args.work_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.database = self.folder.resolve() / "family_scaling.db"
        self.runs = self.folder.resolve() / "family_scaling_runs"
        self.partial = self.out.with_name(f"{self.out.stem}_partial")
        for run in partial_runs.restore(self.database, self.runs, self.partial):
            print(f"continuing {partial_runs.describe(run)} from {self.partial.name}", flush=True)
        self.db = ["--db", f"sqlite:///{self.database}"]
        self.data = (["--dataset", "idx", "--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir
                     else ["--dataset", args.dataset])
        self.results: dict[str, Any] = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.results.setdefault("networks", {})
        self.started = time.monotonic()
        self.done: list[tuple[str, float]] = []
        self.family_ids: dict[str, int] = {}
        # Pool threads grow families (each once) and save results (one save at a time); a grow holds only its own
        # lock, so that runs ending meanwhile are saved.
        self.grow_lock = threading.Lock()
        self.save_lock = threading.RLock()

    def run(self, args: list[str]) -> str:
        print("running: python -m", " ".join(args), flush=True)
        result = subprocess.run([sys.executable, "-m", *args], cwd=self.folder, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "EFFNAS_DB": "", "PYTHONPATH": str(REPO)})
        if result.returncode == partial_runs.INTERRUPTED:
            raise KeyboardInterrupt  # the command saved its state on Ctrl-C, whether or not this process saw it
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(args[:2])} failed ({result.returncode})")
        return result.stdout

    def save(self, message: str) -> None:
        with self.save_lock:
            self.results["setup"] = {
                "data": f"{self.args.dataset}; validation images held out of the training files; test accuracy on the "
                        "test files",
                "search": " ".join([*SEARCH, *self.data]),
                "budgets": {name: {**b, "label": budget_label(name, self.args.dataset)} for name, b in BUDGETS.items()},
                "families": FAMILIES,
                "recipe": "scaling.train's final recipe (SGD Nesterov, warm-up + cosine, label smoothing 0.1, EMA, "
                          "crop/flip/erasing) with the budget's epochs and images",
                "flops": "multiply-accumulates of conv and linear layers, at each network's resolution",
            }
            self.results["findings"] = findings(self.results["networks"], self.results.get("grid"),
                                                self.results.get("grid_medium"))
            write_json(self.out, {k: v for k, v in self.results.items() if k not in ("command", "date", "machine")})
            plot(self.results["networks"], self.out.with_suffix(".png"), self.args.dataset)
            if self.args.commit:
                files = [str(self.out), str(self.out.with_suffix(".png"))]
                subprocess.run(["git", "add", "--", *files], cwd=REPO, check=False)
                subprocess.run(["git", "commit", "-q", "-m", f"bench/family_scaling: {message}", "--", *files], cwd=REPO,
                               check=False)

    def save_partial(self) -> None:
        """Carry the runs stopped half-way to a fresh clone (see the docstring); nothing may train meanwhile."""
        carried = partial_runs.save(self.database, self.runs, self.partial) if self.database.is_file() else []
        for run in carried:
            print(f"saved {partial_runs.describe(run)} to {self.partial}", flush=True)
        if not carried:
            print("no run is stopped half-way; nothing to carry", flush=True)
        if self.args.commit:
            subprocess.run(["git", "add", "-A", "-f", "--", str(self.partial)], cwd=REPO, check=False,
                           stderr=subprocess.DEVNULL)
            subprocess.run(["git", "commit", "-q", "-m", f"bench/family_scaling: {len(carried)} stopped runs carried",
                            "--", str(self.partial)], cwd=REPO, check=False, stderr=subprocess.DEVNULL)

    def found_spec(self) -> Path:
        path = self.folder / "found_b0.json"
        if "found_b0" not in self.results:
            self.run([*SEARCH, *self.data, "--device", self.args.device, *self.db])
            from db import open_database, searches, trials

            db = open_database(self.db[1], create=False)
            trial = trials.best_trial(db, max(row.id for row in searches.list_searches(db)))
            self.results["found_b0"] = {"arch": trial.arch, "block_strings": trial.block_strings,
                                        "flops": trial.flops, "params": trial.params, "proxy_accuracy": trial.accuracy}
            self.save("the found B0")
        path.write_text(json.dumps(self.results["found_b0"]["arch"]))
        return path

    def family_id(self, name: str) -> int:
        with self.grow_lock:
            from db import open_database
            from db.families import list_families

            if name in self.family_ids:
                return self.family_ids[name]
            db = open_database(self.db[1])
            stored = [row.id for row in list_families(db) if row.name == name]
            if stored:
                self.family_ids[name] = stored[0]
                return stored[0]
            grow = [str(self.found_spec()) if part == "found" else part for part in FAMILIES[name]]
            if name in DATA_FAMILIES:
                grow += self.data
            started = time.monotonic()
            family = json.loads(self.run(["scaling.grow", *grow, "--phi-max", "2", "--name", name, "--format", "json",
                                          "--latency-runtime", "none", *self.db]))
            if name in GRID_FAMILIES:
                self.save_grid(name, family, started)
            self.family_ids[name] = family["family_id"]
            return family["family_id"]

    def save_grid(self, name: str, family: dict[str, Any], started: float) -> None:
        with self.save_lock:
            key = GRID_FAMILIES[name]
            if key in self.results and coefficients_of(self.results[key]) != coefficients_of(family):
                # The networks trained so far came from the JSON's grid; the new one is recorded beside it.
                print(f"warning: the {name} grid chose {coefficients_of(family)} here, where the JSON holds "
                      f"{coefficients_of(self.results[key])}", flush=True)
                self.results[key]["refitted"] = family["coefficients"]
            else:
                self.results[key] = {"coefficients": family["coefficients"], "points": family["grid"],
                                     "seconds": self.results.get(key, {}).get("seconds", time.monotonic() - started),
                                     "args": FAMILIES[name]}
            self.save(f"{name} coefficients")

    def grid_differs(self) -> bool:
        self.family_id("found-grid")
        return coefficients_of(self.results["grid"]) != (1.2, 1.1, 1.15)

    def train_command(self, family: str, member: str, budget: str, seed: int) -> list[str]:
        b = BUDGETS[budget]
        subset = ["--subset", str(b["subset"])] if b["subset"] else []
        # Runs at once on a CPU split its cores rather than each taking them all.
        threads = self.args.threads or (max(1, (os.cpu_count() or 1) // self.args.concurrent)
                                        if self.args.concurrent > 1 else None)
        threads = ["--threads", str(threads)] if threads else []
        return ["scaling.train", "--family", str(self.family_id(family)), "--members", member, "--seeds", str(seed),
                *self.data, *subset, "--epochs", str(b["epochs"]), "--val-images", str(b["val_images"]),
                "--device", self.args.device, *threads, "--format", "json",
                "--out-dir", str(self.runs),
                *self.db]

    def trained(self, family: str, member: str, budget: str, seed: int) -> bool:
        entry = self.results["networks"].get(f"{family}/{member}/{budget}", {})
        return str(seed) in entry.get("test_accuracy", {})

    def train(self, jobs: list[tuple[str, str, str, int]]) -> bool:
        """Train the jobs (family, member, budget, seed) not yet in the JSON, `--concurrent` at a time, each stored
        as it ends. False when --stop-after stopped it before the end."""
        jobs = [job for job in dict.fromkeys(jobs) if not self.trained(*job)]
        total = len(jobs) + len(self.done)
        running: dict[Future, tuple[str, str, str, int]] = {}
        with ThreadPoolExecutor(max_workers=self.args.concurrent) as pool:
            while jobs or running:
                while jobs and len(running) < self.args.concurrent and not self.out_of_time():
                    job = jobs.pop(0)
                    # A family is grown in the pool as well, so that runs ending meanwhile (a grid grows for tens
                    # of minutes) are stored as they end.
                    running[pool.submit(self.train_job, job)] = job
                if not running:
                    return False
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job, (run, started, ended) = running.pop(future), future.result()
                    self.store(*job, run, started, ended)
                    self.progress(job, run, total)
        return True

    def progress(self, job: tuple[str, str, str, int], run: dict[str, Any], total: int) -> None:
        """One line per finished run: how many of this call's runs are done, the best test accuracy among them,
        and the time left at the pace so far."""
        self.done.append((f"{job[0]}/{job[1]}/{job[2]} seed {job[3]}", run["test_accuracy"]))
        elapsed = time.monotonic() - self.started
        best = max(self.done, key=lambda item: item[1])
        left = elapsed / len(self.done) * (total - len(self.done))
        print(f"[{len(self.done)}/{total} runs] {self.done[-1][0]}: test accuracy {run['test_accuracy']:.4f}; best "
              f"so far {best[1]:.4f} ({best[0]}); {elapsed / 3600:.1f} h in, ~{left / 3600:.1f} h left at this pace",
              flush=True)

    def train_job(self, job: tuple[str, str, str, int]) -> tuple[dict[str, Any], float, float]:
        return self.train_one(self.train_command(*job))

    def train_one(self, command: list[str]) -> tuple[dict[str, Any], float, float]:
        started = time.time()
        [run] = json.loads(self.run(command))
        return run, started, time.time()

    def store(self, family: str, member: str, budget: str, seed: int, run: dict[str, Any], started: float,
              ended: float) -> None:
        with self.save_lock:
            key = f"{family}/{member}/{budget}"
            entry = self.results["networks"].setdefault(key, {})
            entry.setdefault("test_accuracy", {})[str(seed)] = run["test_accuracy"]
            entry.setdefault("val_accuracy", {})[str(seed)] = run["val_accuracy"]
            entry.setdefault("seconds", {})[str(seed)] = run["seconds"]
            entry.setdefault("wall", {})[str(seed)] = [round(started, 1), round(ended, 1)]
            entry.setdefault("device", {})[str(seed)] = run["device"]
            entry.update(family=family, rule=rule_of(family), member=member, budget=budget,
                         flops=run["flops"], params=run["params"], resolution=run["resolution"],
                         block_strings=run["block_strings"])
            self.save(f"{key} seed {seed}")

    def out_of_time(self) -> bool:
        limit = parse_duration(self.args.stop_after) if self.args.stop_after else None
        return limit is not None and time.monotonic() - self.started > limit

    def selected(self, networks: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not self.args.networks:
            return networks
        wanted = {tuple(name.split("/")) for name in self.args.networks.split(",")}
        return [n for n in networks if n in wanted]

    def estimate(self, jobs: list[tuple[str, str, str, int]]) -> None:
        """Print how long the jobs should take: each network's seconds per image from PROBE_STEPS training steps on
        the device, times its image passes, over the runs trained at once."""
        jobs = [job for job in jobs if not self.trained(*job)]
        if not jobs:
            return
        from db import open_database
        from db.families import get_family
        from nas.space.spec import spec_from_dict
        from nas.training.config import resolve_device

        device = resolve_device(self.args.device)
        db = open_database(self.db[1])
        total = 0.0
        for family, member, budget in dict.fromkeys(job[:3] for job in jobs):
            arch = next(m.arch for m in get_family(db, self.family_id(family)).members if m.name == member)
            spec = replace(spec_from_dict(arch), in_channels=1, num_classes=10)
            b = BUDGETS[budget]
            images = training_images(budget, self.args.dataset)
            runs = sum(1 for job in jobs if job[:3] == (family, member, budget))
            total += probe_seconds_per_image(spec, device) * images * b["epochs"] * runs
        print(f"estimate: {total / self.args.concurrent / 3600:.1f} h for {len(jobs)} runs, {self.args.concurrent} at "
              f"a time on {device} ({PROBE_STEPS} training steps of each network at batch {PROBE_BATCH}; no data "
              "loading or evaluation, and as if the runs at once shared the device without slowing each other)",
              flush=True)


def probe_seconds_per_image(spec: Any, device: str, steps: int = PROBE_STEPS,
                            before_timing: Callable[[], None] | None = None) -> float:
    """Seconds per training image of `spec` on `device`: forward, backward and an SGD step on random images.
    `before_timing` runs after the warm-up steps, just before the clock starts."""
    import torch

    from nas.space.builder import build_model

    model = build_model(spec).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(PROBE_BATCH, spec.in_channels, spec.resolution, spec.resolution, device=device)
    labels = torch.randint(0, spec.num_classes, (PROBE_BATCH,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)),
                                          labels).backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if before_timing is not None:
        before_timing()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / (steps * PROBE_BATCH)


def concurrent_images_per_second(spec: Any, device: str, processes: int) -> float:
    """Training images per second of `processes` probes of `spec` at once on `device`, each its own process (as
    the bench's runs are), started together once all are warm."""
    from nas.space.spec import spec_to_dict

    threads = max(1, (os.cpu_count() or 1) // processes) if device == "cpu" else 1
    workers = [subprocess.Popen([sys.executable, __file__, "--probe-worker", json.dumps(spec_to_dict(spec)), device,
                                 str(CONCURRENCY_PROBE_STEPS), str(threads)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    for worker in workers:
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit("a concurrency probe failed to start")
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    return sum(1 / float(worker.communicate()[0]) for worker in workers)


def best_concurrency(spec: Any, device: str, limit: int) -> int:
    """How many runs at once train the most images per second: 1, 2, 4, ... probes at once, doubling while the
    total rises by at least 10 %."""
    best, best_rate, processes = 1, 0.0, 1
    while processes <= limit:
        rate = concurrent_images_per_second(spec, device, processes)
        print(f"concurrency probe on {device}: {processes} at once, {rate:,.0f} training images/s in all", flush=True)
        if rate < best_rate * 1.1:
            break
        best, best_rate, processes = processes, rate, processes * 2
    print(f"training {best} runs at once", flush=True)
    return best


def probe_worker(spec_json: str, device: str, steps: str, threads: str) -> int:
    """One concurrency probe: warm up, say `ready`, wait for a line on stdin, then print seconds per image."""
    import torch

    from nas.space.spec import spec_from_dict

    torch.set_num_threads(int(threads))

    def wait_for_go() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    print(probe_seconds_per_image(spec_from_dict(json.loads(spec_json)), device, int(steps), wait_for_go), flush=True)
    return 0


def coefficients_of(grid: dict[str, Any]) -> tuple[float, float, float]:
    c = grid["coefficients"]
    return c["alpha"], c["beta"], c["gamma"]


def training_images(budget: str, dataset: str = "fashion-mnist") -> int:
    b = BUDGETS[budget]
    return b["subset"] or TRAINING_FILE_IMAGES.get(dataset, 60_000) - b["val_images"]


def budget_label(budget: str, dataset: str = "fashion-mnist") -> str:
    b = BUDGETS[budget]
    images = training_images(budget, dataset)
    return f"{images:,} images x {b['epochs']} epoch{'s' if b['epochs'] != 1 else ''}"


def rule_of(family: str) -> str:
    grow = FAMILIES[family]
    return grow[grow.index("--rule") + 1] if "--rule" in grow else "compound"

def stats(entry: dict[str, Any]) -> tuple[float, float]:
    mean, sd = seed_spread(list(entry["test_accuracy"].values()))
    return mean, sd or 0.0


def network(networks: dict[str, Any], family: str, member: str, budget: str = "short") -> dict[str, Any] | None:
    """A network's entry; a single-dimension or grid family's B0 is the found B0."""
    if member == "B0" and family not in ("found-paper", "efficientnet-official"):
        family = "found-paper"
    return networks.get(f"{family}/{member}/{budget}")


def above(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether a's mean exceeds b's by more than the larger of their spreads (None while either is missing)."""
    if not a or not b or len(a["test_accuracy"]) < 2 or len(b["test_accuracy"]) < 2:
        return None
    (ma, sa), (mb, sb) = stats(a), stats(b)
    return ma - mb > max(sa, sb)


def thin_margin(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether a beats b beyond the spread, but by less than twice it."""
    (ma, sa), (mb, sb) = stats(a), stats(b)
    return bool(above(a, b)) and ma - mb < 2 * max(sa, sb)


def third_seed_rules(b2s: dict[str, dict[str, Any]]) -> list[str]:
    """Given each rule's B2 in ranking order, best first: the best rule and every rule it does not beat by twice the
    spread (inside the spread or thinly beyond it), or [] when it beats them all by that much."""
    (best, winner), *rivals = b2s.items()
    unsettled = [rule for rule, b2 in rivals if not above(winner, b2) or thin_margin(winner, b2)]
    return [best, *unsettled] if unsettled else []


def overlapping(networks: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(family, member, budget) of networks in a compared pair whose spreads overlap: they get a third seed."""
    pairs = [(("found-paper", m), ("efficientnet-official", m)) for m in ("B1", "B2")]
    pairs += [(("found-paper", "B1"), ("found-paper", "B0")), (("found-paper", "B2"), ("found-paper", "B1"))]
    pairs += [(("found-paper", "B2"), (f"found-{rule}", "B2")) for rule in ("width", "depth", "resolution")]
    chosen = []
    for left, right in pairs:
        a, b = network(networks, *left), network(networks, *right)
        if above(a, b) is False and above(b, a) is False:
            chosen += [(*left, "short"), (*right, "short")]
    return list(dict.fromkeys(chosen))


RULE_OF_FAMILY = {"found-paper": "compound", "found-width": "width", "found-depth": "depth",
                  "found-resolution": "resolution", "found-grid": "grid"}


def ranking(networks: dict[str, Any], budget: str, member: str = "B2") -> list[dict[str, Any]]:
    """The rules' `member`s measured at `budget`, best mean test accuracy first."""
    rows = []
    for family, rule in RULE_OF_FAMILY.items():
        entry = network(networks, family, member, budget)
        if entry:
            mean, sd = stats(entry)
            rows.append({"rule": rule, "mean": round(mean, 4), "sd": round(sd, 4), "seeds": len(entry["test_accuracy"]),
                         "flops": entry["flops"]})
    return sorted(rows, key=lambda row: -row["mean"])


def default_rule(networks: dict[str, Any]) -> dict[str, Any] | None:
    """The rule `scaling.grow` should default to: at the longest budget where at least two fixed rules' B2 have two
    seeds, the winner if it beats every other beyond the spread, else the cheapest (fewest B2 FLOPs) that none
    beats beyond the spread. The grid is no candidate (a default cannot train on data it has not been given); it is
    reported beside the choice."""
    for budget in ("full", "medium", "long", "short"):
        rows = [row for row in ranking(networks, budget) if row["seeds"] >= 2]
        fixed = [row for row in rows if row["rule"] != "grid"]
        if len(fixed) < 2:
            continue
        entries = {row["rule"]: network(networks, family_of_rule(row["rule"]), "B2", budget) for row in rows}
        best = fixed[0]["rule"]
        if all(above(entries[best], entries[r["rule"]]) for r in fixed[1:]):
            choice, why = best, "wins beyond the spread"
        else:
            not_worse = [r for r in fixed if not any(above(entries[o["rule"]], entries[r["rule"]]) for o in fixed)]
            choice = min(not_worse, key=lambda r: r["flops"])["rule"]
            why = "no rule wins beyond the spread; the cheapest that none beats"
        grid = ("not measured" if "grid" not in entries else
                "above the choice beyond the spread" if above(entries["grid"], entries[choice]) else
                "below the choice beyond the spread" if above(entries[choice], entries["grid"]) else
                "within the spread of the choice")
        return {"rule": choice, "budget": budget, "budget_label": budget_label(budget), "why": why,
                "grid-fitted B2": grid, "ranking": rows}
    return None


def family_of_rule(rule: str) -> str:
    return next(family for family, r in RULE_OF_FAMILY.items() if r == rule)


def findings(networks: dict[str, Any], grid: dict[str, Any] | None = None,
             grid_medium: dict[str, Any] | None = None) -> dict[str, Any]:
    """The targets, as far as the trained networks answer them (None: not yet measured)."""
    result: dict[str, Any] = {"table": {}}
    for key, entry in sorted(networks.items()):
        mean, sd = stats(entry)
        result["table"][key] = {"mean": round(mean, 4), "sd": round(sd, 4), "seeds": len(entry["test_accuracy"]),
                                "flops": entry["flops"], "params": entry["params"], "resolution": entry["resolution"],
                                "budget": budget_label(entry["budget"])}
    for phi in (0, 1, 2):
        m = f"B{phi}"
        found, eff = network(networks, "found-paper", m), network(networks, "efficientnet-official", m)
        result[f"found {m} >= EfficientNet {m} at no more FLOPs"] = (
            None if not found or not eff else stats(found)[0] >= stats(eff)[0] and found["flops"] <= eff["flops"])
        if phi:
            result[f"found {m} above EfficientNet {m} by more than the spread"] = above(found, eff)
    for budget in ("short", "long"):
        chain = [network(networks, "found-paper", f"B{p}", budget) for p in (0, 1, 2)]
        result[f"B2 > B1 > B0 by more than the spread ({budget})"] = (
            None if None in [above(chain[2], chain[1]), above(chain[1], chain[0])]
            else above(chain[2], chain[1]) and above(chain[1], chain[0]))
    fixed = [row["rule"] for row in ranking(networks, "short") if row["rule"] != "grid"]
    result["best rule at phi=2"] = fixed[0] if fixed else None
    best_single = next((rule for rule in fixed if rule != "compound"), None)
    result["compound above the best single dimension at phi=2 by more than the spread"] = (
        above(network(networks, "found-paper", "B2"), network(networks, f"found-{best_single}", "B2"))
        if best_single else None)
    if grid is not None:
        result["grid-fitted coefficients (alpha, beta, gamma)"] = list(coefficients_of(grid))
        winner = result["best rule at phi=2"]
        fitted = network(networks, "found-grid", "B2")
        best = network(networks, "found-paper" if winner == "compound" else f"found-{winner}", "B2")
        result["grid-fitted B2 not below the best rule's B2 by more than the spread"] = (
            None if not fitted or not best else above(best, fitted) is False)
    for budget in ("short", "medium", "full"):
        result[f"rule ranking at phi=2 ({budget_label(budget)})"] = ranking(networks, budget) or None
    for budget in ("short", "medium"):
        capped, free = (network(networks, family, "B2", budget) for family in ("found-paper-capped", "found-paper"))
        result[f"paper B2 with resolution capped at the stored size not below it uncapped by more than the spread "
               f"({budget_label(budget)})"] = None if above(free, capped) is None else not above(free, capped)
    short, medium = ranking(networks, "short"), ranking(networks, "medium")
    both = [row["rule"] for row in medium if row["rule"] in {r["rule"] for r in short}]
    result["phi=2 ranking, medium against short"] = (
        None if len(both) < 2 else
        "same" if both == [row["rule"] for row in short if row["rule"] in both] else
        f"changed: short {' > '.join(r['rule'] for r in short if r['rule'] in both)}, medium {' > '.join(both)}")
    if medium:
        best = network(networks, family_of_rule(medium[0]["rule"]), "B2", "medium")
        result["medium: best rule's B2 above found B0 by more than the spread"] = above(
            best, network(networks, "found-paper", "B0", "medium"))
        result["medium: best rule's B2 above EfficientNet-B0 by more than the spread"] = above(
            best, network(networks, "efficientnet-official", "B0", "medium"))
    trained_medium = [e for e in networks.values() if e["budget"] == "medium"]
    if trained_medium:
        result["medium: hours of training, summed over runs"] = round(
            sum(s for e in trained_medium for s in e["seconds"].values()) / 3600, 2)
        result["medium: wall-clock hours the runs took (2 cores)"] = round(
            covered_seconds([span for e in trained_medium for span in e.get("wall", {}).values()]) / 3600, 2)
    if grid_medium is not None:
        result["grid-fitted coefficients, 15-epoch runs"] = list(coefficients_of(grid_medium))
        if grid is not None:
            result["grid coefficients change with the budget"] = coefficients_of(grid) != coefficients_of(grid_medium)
        family_seconds = sum(s for key, e in networks.items()
                             if e["budget"] == "medium" and e["family"] == "found-grid" for s in e["seconds"].values())
        result["grid seconds (15-epoch runs) against seconds training its family's B2 at medium"] = [
            round(grid_medium["seconds"]), round(family_seconds)]
    full = ranking(networks, "full")
    if full:
        best_family = family_of_rule(full[0]["rule"])
        for phi in (0, 1, 2):
            m = f"B{phi}"
            result[f"full: found {m} ({full[0]['rule']}) above EfficientNet {m} by more than the spread"] = above(
                network(networks, best_family, m, "full"), network(networks, "efficientnet-official", m, "full"))
        b0 = network(networks, "found-paper", "B0", "full")
        result["full: found B0 >= 0.94 test accuracy"] = None if not b0 else stats(b0)[0] >= 0.94
    result["default rule"] = default_rule(networks)
    return result


def covered_seconds(spans: list[list[float]]) -> float:
    """The length of the union of [start, end] spans: wall-clock time with at least one run going."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def plot(networks: dict[str, Any], path: Path, dataset: str = "fashion-mnist") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    budgets = [b for b in BUDGETS if any(e["budget"] == b for e in networks.values())] or ["short"]
    figure, panels = plt.subplots(1, len(budgets), figsize=(7 * len(budgets), 5.5), squeeze=False)
    for axes, budget in zip(panels[0], budgets):
        for family in FAMILIES:
            points = []
            for member in ("B0", "B1", "B2"):
                entry = network(networks, family, member, budget)
                if entry:
                    points.append((entry["flops"] / 1e6, *stats(entry), member))
            if len(points) > 1 or (points and family in ("found-paper", "efficientnet-official")):
                x, y, err, names = zip(*points)
                axes.errorbar(x, y, yerr=err, marker="o", capsize=4, label=family)
                for xi, yi, name in zip(x, y, names):
                    axes.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=8)
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        axes.set_xlabel("FLOPs (millions of multiply-accumulates of conv and linear layers, at each network's "
                        "resolution)", fontsize=8)
        axes.set_ylabel("test accuracy (mean +- sd over seeds)")
        axes.set_title(f"{dataset}, {budget} budget: {budget_label(budget, dataset)}")
        axes.grid(True, which="both", alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", choices=("short", "medium", "full"), default="short",
                        help="which networks, seeds and budget (see the docstring)")
    parser.add_argument("--budget", choices=tuple(BUDGETS), help="train the medium or full plan at this budget")
    parser.add_argument("--networks", help="only these networks of the plan, e.g. found-paper/B0,found-width/B2")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--concurrent", default="1",
                        help="train this many runs at once (1); auto: as many as train the most images per second, "
                        "measured on the device first")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: scaling.train's)")
    parser.add_argument("--dataset", default="fashion-mnist", help="the data set (fashion-mnist)")
    parser.add_argument("--data-dir", help="IDX files to train on instead (the bench's own tests)")
    parser.add_argument("--stop-after", help="start no new run after this long, e.g. 2h (default: run to the end)")
    parser.add_argument("--report", action="store_true",
                        help="only recompute the findings and the PNG from the JSON (no training)")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON and PNG after each run")
    parser.add_argument("--save-partial", action="store_true",
                        help="copy the runs stopped half-way into a folder beside --out, for a fresh clone to "
                        "continue (with --commit, commit it); train nothing")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    parser.add_argument("--work-dir", default=str(HERE / "out"), help="the database, checkpoints and weights")
    if sys.argv[1:2] == ["--probe-worker"]:
        return probe_worker(*sys.argv[2:6])
    args = parser.parse_args()
    if args.concurrent != "auto" and not (args.concurrent.isdigit() and int(args.concurrent) >= 1):
        parser.error(f"--concurrent takes a number of at least 1 or auto, got {args.concurrent!r}")
    if args.budget and args.plan == "short":
        parser.error("--budget goes with --plan medium or full")
    bench = Bench(args)
    if args.save_partial:
        bench.save_partial()
        return 0
    if args.concurrent == "auto":
        from nas.space.spec import spec_from_dict
        from nas.training.config import resolve_device

        device = resolve_device(args.device)
        found = replace(spec_from_dict(json.loads(bench.found_spec().read_text())), in_channels=1, num_classes=10)
        limit = (os.cpu_count() or 1) if device == "cpu" else MAX_CONCURRENT
        args.concurrent = best_concurrency(found, device, limit)
    args.concurrent = int(args.concurrent)
    if args.report:
        bench.save("findings recomputed")
        finished = True
    elif args.plan == "medium":
        finished = run_medium(bench, args.budget or "medium")
    elif args.plan == "full":
        budget = args.budget or "full"
        jobs = [(f, m, budget, seed) for f, m in bench.selected(FULL_NETWORKS) for seed in FULL_SEEDS]
        bench.estimate(jobs)
        finished = bench.train(jobs)
    else:
        finished = run_short(bench)
    if not finished:
        print("--stop-after reached; run again to continue", flush=True)
        return 0
    print(json.dumps(bench.results["findings"], indent=2))
    return 0


def run_short(bench: Bench) -> bool:
    for family, member, budget in SHORT_PLAN:
        if family == "found-grid" and not bench.grid_differs():
            continue
        if not bench.train([(family, member, budget, seed) for seed in SEEDS]):
            return False
    extra = [(*network, seed) for network in overlapping(bench.results["networks"]) for seed in (*SEEDS, THIRD_SEED)]
    return bench.train([*extra, *[(*network, seed) for network in SHORT_OPTIONAL for seed in SEEDS]])


def run_medium(bench: Bench, budget: str) -> bool:
    """The phi = 2 networks, the grid at 15 epochs, phi = 1 of the two best rules if their B2s overlap (else a third
    seed of the best B2 and of those it does not beat by twice the spread), then the optional B2s (resolution, capped)."""
    networks = bench.selected(MEDIUM_NETWORKS)
    if not bench.train([(f, m, budget, seed) for f, m in networks for seed in SEEDS]):
        return False
    if not bench.args.networks:
        bench.family_id("found-grid-medium")
    if bench.out_of_time():
        return False
    rows = [row for row in ranking(bench.results["networks"], budget) if row["seeds"] >= 2]
    settling: list[tuple[str, str, str, int]] = []
    if len(rows) >= 2:
        b2s = {r["rule"]: network(bench.results["networks"], family_of_rule(r["rule"]), "B2", budget) for r in rows}
        first, second = rows[0]["rule"], rows[1]["rule"]
        if not above(b2s[first], b2s[second]):
            phi1 = bench.selected([(family_of_rule(rule), "B1") for rule in (first, second)])
            settling = [(f, m, budget, seed) for f, m in phi1 for seed in SEEDS]
        else:
            # The default rule rests on the best B2's margins; one inside twice the spread is two seeds' luck as
            # much as the rule's, so the best B2 and every B2 it does not beat by that much get a third seed.
            third = bench.selected([(family_of_rule(rule), "B2") for rule in third_seed_rules(b2s)])
            settling = [(f, m, budget, THIRD_SEED) for f, m in third]
    # One pool for both, settling runs first: an odd count of settling runs would otherwise leave a core idle
    # while the last one trains alone.
    optional = bench.selected(MEDIUM_OPTIONAL)
    return bench.train([*settling, *[(f, m, budget, seed) for f, m in optional for seed in SEEDS]])

if __name__ == "__main__":
    partial_runs.exit_with(main, "the next run continues each training from its last epoch")
