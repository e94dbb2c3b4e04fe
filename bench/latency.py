"""Latency on this machine: the latency table's predictions against measured latency for the 404 architectures of
the evaluation table, FLOPs against measured latency, and the measurement's own noise across processes.

Run: .venv/bin/python bench/latency.py [--parts predictor,noise] [--runtimes eager,onnxruntime] [--out FILE]

- predictor: per runtime (batch 1, 1 thread), every architecture of bench/evaluation_table.json at its task's
  resolution (Fashion-MNIST, 32 px, stem stride 1) measured whole and predicted by `nas.evaluation.latency_table`
  (calibrated on the space's own 24 calibration networks, none of them in the table): share within +-10 % of measured,
  RMSE, Kendall tau; FLOPs' Kendall tau against the same measurements. The table and the measurements live in
  bench/out/latency/table.db, so a cut-off run resumes where it stopped; about 25 minutes a runtime on 2 cores.
- noise: one network (the space's EfficientNet-B0) measured in 5 separate processes per runtime, each scaled to the
  reference speed stored in bench/out/latency/table.db: each process's median, and the largest deviation from the
  median of medians (beside it, the same with each process's own reference and unscaled).

- searches: on the same task, `nas.search --target-latency T --constraint hard` beside `--target-flops F
  --constraint hard`, F the median FLOPs of the table's networks measured within +-10 % of T, same seed (0) and
  time budget (--search-budget, 12 minutes each): each winner's measured latency against T, its proxy accuracy and
  accuracy per millisecond. The searches' databases live in bench/out/latency/ (a finished search is not rerun);
  the latency search starts from a copy of the predictor part's table, so it measures only parts it has not seen.

- family: `scaling.grow --phi-max 2` of the found B0 of bench/family_scaling.json by width (`--rule width`) and of
  EfficientNet-B0 by its official table at 32 px (the family bench's two families), each member with the task's
  channels and classes, measured at batch 1 and 32 on the predictor's stored reference speed: FLOPs, parameters,
  milliseconds.

Run it alone: a busy machine measures its own load. Results go to bench/latency.json (or --out); each part's
results are kept when another part is run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_json import default_path, read_json, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

TABLE = HERE / "evaluation_table.json"
OUT_DIR = HERE / "out" / "latency"
# The evaluation table's task: Fashion-MNIST (1 channel, 10 classes) at 32 px, stem stride 1.
TASK = {"num_classes": 10, "in_channels": 1, "resolution": 32, "stem_stride": 1}
NOISE_PROCESSES = 5
WITHIN = 0.10


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def predictor(runtime: str) -> dict[str, Any]:
    from db.session import open_database
    from nas.evaluation.latency import LatencyProtocol
    from nas.evaluation.latency_table import LatencyTable, calibration_layouts
    from nas.space.layout import network_layout
    from nas.space.search_space import SearchSpace

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    db = open_database(f"sqlite:///{OUT_DIR / 'table.db'}")
    protocol = LatencyProtocol(runtime=runtime)
    table = LatencyTable(protocol, db)
    space = SearchSpace(**TASK)
    calibration = calibration_layouts(space)
    table.calibrate(calibration)
    print(f"{runtime}: calibrated on {len(calibration)} networks: {table.describe_fit()}", flush=True)
    entries = read_json(TABLE)["entries"]
    measured, raw, predicted, flops = [], [], [], []
    for index, entry in enumerate(entries):
        layout = network_layout(space.decode(entry["sample"]))
        latency = table.measure(layout)
        measured.append(latency.median_ms)
        raw.append(latency.raw_median_ms)
        predicted.append(table.predict(layout))
        flops.append(entry["flops"])
        if (index + 1) % 50 == 0:
            print(f"{runtime}: {index + 1}/{len(entries)} networks, {table.measured_now} parts or networks measured "
                  "this run", flush=True)
    errors = [(p - m) / m for p, m in zip(predicted, measured)]
    return {
        "protocol": protocol.describe(), "environment": protocol.environment(),
        "networks": len(entries), "reference_ms": table.reference_ms,
        "parts_in_table": sum(1 for item in table.figures if item.split()[0] in ("stem", "block", "head")),
        "fit": table.describe_fit(), "coefficients": table.coefficients,
        "within_10_percent": sum(abs(e) <= WITHIN for e in errors) / len(errors),
        # Against each network's plain median, unscaled by the reference: what a single timing on a shared machine
        # would have said.
        "within_10_percent_raw": sum(abs(p - r) <= WITHIN * r for p, r in zip(predicted, raw)) / len(raw),
        "rmse_ms": statistics.fmean((p - m) ** 2 for p, m in zip(predicted, measured)) ** 0.5,
        "mean_abs_relative_error": statistics.fmean(abs(e) for e in errors),
        "kendall_tau_predicted": kendall(predicted, measured), "kendall_tau_flops": kendall(flops, measured),
        "measured_ms": {"min": min(measured), "median": statistics.median(measured), "max": max(measured)},
        "points": [{"flops": f, "measured_ms": round(m, 4), "raw_ms": round(r, 4), "predicted_ms": round(p, 4)}
                   for f, m, r, p in zip(flops, measured, raw, predicted)],
    }


_NOISE_SCRIPT = """
import json, sys
from db.session import open_database
from nas.evaluation.latency import LatencyProtocol, measure_latency, reference_speed
from nas.evaluation.latency_table import stored_reference_speed
from nas.space.builder import build_model
from nas.space.search_space import SearchSpace
space = SearchSpace(**json.loads(sys.argv[1]))
protocol = LatencyProtocol(runtime=sys.argv[2])
stored = stored_reference_speed(protocol, open_database(sys.argv[3]))
latency = measure_latency(build_model(space.reference_spec()), (1, space.in_channels, space.resolution,
                          space.resolution), protocol, stored)
print(json.dumps({"median_ms": latency.median_ms, "iqr_ms": latency.iqr_ms, "runs": latency.runs,
                  "raw_median_ms": latency.raw_median_ms, "ratio": latency.median_ms / stored,
                  "process_reference_ms": reference_speed(protocol)}))
"""


def noise(runtime: str) -> dict[str, Any]:
    """Each process scales to the reference speed stored in the predictor part's table, as a search or
    `scaling.grow` on the same database does; `process_reference_ms` is the reference each process would have
    measured for itself, and `per_process_max_deviation` the spread of the figures scaled to those instead."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    medians = []
    for _ in range(NOISE_PROCESSES):
        out = subprocess.run([sys.executable, "-c", _NOISE_SCRIPT, json.dumps(TASK), runtime,
                              f"sqlite:///{OUT_DIR / 'table.db'}"], cwd=REPO, capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        medians.append(json.loads(out.stdout.strip().splitlines()[-1]))
    centre = statistics.median(m["median_ms"] for m in medians)
    raw = statistics.median(m["raw_median_ms"] for m in medians)
    own = [m["ratio"] * m["process_reference_ms"] for m in medians]
    return {"network": "EfficientNet-B0 of the space, 32 px, stem stride 1", "processes": medians,
            "median_of_medians_ms": centre,
            "max_deviation": max(abs(m["median_ms"] - centre) / centre for m in medians),
            "per_process_max_deviation": max(abs(v - statistics.median(own)) / statistics.median(own) for v in own),
            "raw_median_of_medians_ms": raw,
            "raw_max_deviation": max(abs(m["raw_median_ms"] - raw) / raw for m in medians)}


def flops_at_latency(points: list[dict[str, Any]], target_ms: float) -> int:
    """The median FLOPs of the networks measured within +-10 % of `target_ms`."""
    near = [p["flops"] for p in points if abs(p["measured_ms"] - target_ms) <= WITHIN * target_ms]
    if not near:
        raise SystemExit(f"latency: no network of the table measured within 10 % of {target_ms} ms")
    return int(statistics.median(near))


def _search(db: Path, target: list[str], budget: str) -> dict[str, Any]:
    """Run one search into `db` (unless it finished there before) and read its winner."""
    from db import open_database, searches, trials
    from effnas.records import SearchStatus

    args = [sys.executable, "-m", "nas.search", "--db", str(db), "--dataset", "fashion-mnist", "--resolution", "32",
            "--constraint", "hard", "--time-budget", budget, "--trials", "500", *target]
    stored = searches.get_search(open_database(f"sqlite:///{db}"), 1) if db.exists() else None
    if stored is None or stored.status is not SearchStatus.FINISHED:
        if stored is not None:
            args = [sys.executable, "-m", "nas.search", "--db", str(db), "--resume", "1"]
        subprocess.run(args, cwd=REPO, check=True)
    store = open_database(f"sqlite:///{db}", create=False)
    winner = trials.best_trial(store, 1)
    done = trials.candidate_status_counts(store, 1)
    return {"command": " ".join(args[1:]), "candidates": sum(done.values()), "winner_number": winner.number,
            "flops": winner.flops, "params": winner.params, "proxy_accuracy": winner.accuracy,
            "predicted_ms": winner.latency_ms, "measured_ms": winner.measured_latency_ms,
            "block_strings": winner.block_strings}


def searches_part(runtime: str, results: dict[str, Any], target_ms: float, budget: str) -> dict[str, Any]:
    """The latency-target and FLOPs-target searches side by side; the FLOPs winner is measured here."""
    from nas.evaluation.latency import LatencyProtocol, measure_latency
    from nas.evaluation.latency_table import stored_reference_speed
    from nas.space.builder import build_model
    from nas.space.spec import spec_from_dict

    flops = flops_at_latency(results["predictor"][runtime]["points"], target_ms)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    latency_db = OUT_DIR / f"search-latency-{runtime}.db"
    if not latency_db.exists():  # the predictor part's table, calibrated on this space: the search reuses it
        shutil.copy(OUT_DIR / "table.db", latency_db)
    latency = _search(latency_db,
                      ["--target-latency", f"{target_ms}ms", "--latency-runtime", runtime], budget)
    flops_run = _search(OUT_DIR / f"search-flops-{runtime}.db", ["--target-flops", str(flops)], budget)
    from db import open_database, trials

    winner = trials.best_trial(open_database(f"sqlite:///{OUT_DIR / f'search-flops-{runtime}.db'}", create=False), 1)
    spec = spec_from_dict(winner.arch)
    # On the latency search's scale: its table's stored reference speed (the machine's speed drifts by tens of
    # percent over half an hour, so a reference measured now would compare the two winners across that drift).
    protocol = LatencyProtocol(runtime=runtime)
    reference_ms = stored_reference_speed(protocol, open_database(f"sqlite:///{latency_db}", create=False))
    flops_run["measured_ms"] = measure_latency(build_model(spec), (1, spec.in_channels, 32, 32), protocol,
                                               reference_ms).median_ms
    for run in (latency, flops_run):
        run["accuracy_per_ms"] = run["proxy_accuracy"] / run["measured_ms"]
        run["measured_over_target"] = run["measured_ms"] / target_ms
    return {"target_ms": target_ms, "flops_target": flops, "budget": budget, "latency_target": latency,
            "flops_target_search": flops_run}


FAMILIES = {"found B0 by width": ["--arch", "FOUND", "--rule", "width"],
            "EfficientNet, official table": ["--baseline", "efficientnet-b0", "--coefficients", "official",
                                             "--resolution", "32"]}


def family_part(runtime: str) -> dict[str, Any]:
    """Each family as `scaling.grow` grows it and as the bench's task trains it (Fashion-MNIST: 1 channel, 10
    classes; a named baseline is grown with ImageNet's), measured by `scaling.family.measure_members` on the
    predictor's stored reference speed."""
    from db import open_database
    from db.families import get_family
    from nas.evaluation.latency import LatencyProtocol
    from nas.evaluation.latency_table import stored_reference_speed
    from nas.space.flops import count_flops, count_params
    from nas.space.spec import spec_from_dict, spec_to_dict
    from scaling.family import measure_members

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    found = OUT_DIR / "found_b0.json"
    found.write_text(json.dumps(read_json(HERE / "family_scaling.json")["found_b0"]["arch"]))
    url = f"sqlite:///{OUT_DIR / 'table.db'}"
    db = open_database(url)
    protocol = LatencyProtocol(runtime=runtime)
    grown = {}
    for name, rule in FAMILIES.items():
        args = [sys.executable, "-m", "scaling.grow", *(str(found) if part == "FOUND" else part for part in rule),
                "--phi-max", "2", "--latency-runtime", "none", "--format", "json", "--db", url]
        family = get_family(db, json.loads(subprocess.run(args, cwd=REPO, check=True, capture_output=True,
                                                          text=True).stdout)["family_id"])
        members = []
        for member in family.members:
            spec = replace(spec_from_dict(member.arch), in_channels=TASK["in_channels"],
                           num_classes=TASK["num_classes"])
            members.append(replace(member, arch=spec_to_dict(spec), flops=count_flops(spec, member.resolution),
                                   params=count_params(spec)))
        measured = measure_members(replace(family, members=members), protocol, float("inf"),
                                   reference_ms=stored_reference_speed(protocol, db))
        grown[name] = {"command": " ".join(args[1:]), "members": [
            {"name": m.name, "resolution": m.resolution, "flops": m.flops, "params": m.params,
             "batch_1_ms": m.latency["batch_1_ms"], "batch_32_ms": m.latency["batch_32_ms"]}
            for m in measured.members]}
    return grown


def report(results: dict[str, Any]) -> None:
    for runtime, r in results.get("predictor", {}).items():
        print(f"{r['protocol']}: {r['networks']} networks ({r['measured_ms']['min']:.2f}-{r['measured_ms']['max']:.2f} "
              f"ms, median {r['measured_ms']['median']:.2f}); predicted within +-10 %: {r['within_10_percent']:.1%}, "
              f"RMSE {r['rmse_ms']:.3f} ms, tau(predicted, measured) {r['kendall_tau_predicted']:.3f}, "
              f"tau(FLOPs, measured) {r['kendall_tau_flops']:.3f}")
    for runtime, r in results.get("searches", {}).items():
        for label, key in (("latency target", "latency_target"), ("FLOPs target", "flops_target_search")):
            run = r[key]
            print(f"search ({runtime}) {label}: {run['candidates']} candidates; winner {run['measured_ms']:.3f} ms "
                  f"measured ({run['measured_over_target']:.2f}x the {r['target_ms']} ms target), "
                  f"{run['flops'] / 1e6:.1f}M FLOPs, proxy acc {run['proxy_accuracy']:.4f}, "
                  f"{run['accuracy_per_ms']:.4f} accuracy per ms")
    for runtime, families in results.get("family", {}).items():
        for name, family in families.items():
            print(f"family ({runtime}) {name}: " + "; ".join(
                f"{m['name']} {m['flops'] / 1e6:.1f}M FLOPs at {m['resolution']} px, {m['batch_1_ms']:.2f} ms (batch 1), "
                f"{m['batch_32_ms']:.1f} ms (batch 32)" for m in family["members"]))
    for runtime, r in results.get("noise", {}).items():
        spread = ", ".join(f"{m['median_ms']:.3f}" for m in r["processes"])
        print(f"noise {runtime}: medians {spread} ms across {len(r['processes'])} processes; largest deviation "
              f"{r['max_deviation']:.1%} from {r['median_of_medians_ms']:.3f} ms (each process's own reference: "
              f"{r.get('per_process_max_deviation', float('nan')):.1%}; unscaled: {r['raw_max_deviation']:.1%})")


def plot(results: dict[str, Any], path: Path) -> None:
    """Per runtime: predicted against measured latency (the +-10 % band shaded), and FLOPs against measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results.get("predictor", {})
    fig, axes = plt.subplots(2, len(runs), figsize=(5 * len(runs), 8.5), squeeze=False)
    for column, (runtime, r) in enumerate(runs.items()):
        measured = [p["measured_ms"] for p in r["points"]]
        top, bottom = axes[0][column], axes[1][column]
        top.scatter(measured, [p["predicted_ms"] for p in r["points"]], s=8, alpha=0.6)
        line = [min(measured), max(measured)]
        top.plot(line, line, color="black", linewidth=1)
        top.fill_between(line, [v * (1 - WITHIN) for v in line], [v * (1 + WITHIN) for v in line], color="grey",
                         alpha=0.2, label="within +-10 %")
        top.set_title(f"{runtime}: {r['within_10_percent']:.0%} within +-10 %, tau {r['kendall_tau_predicted']:.2f}",
                      fontsize=10)
        top.set_xlabel("measured latency, batch 1 (ms)")
        top.set_ylabel("predicted by the latency table (ms)")
        top.legend(fontsize=8)
        bottom.scatter([p["flops"] / 1e6 for p in r["points"]], measured, s=8, alpha=0.6, color="tab:orange")
        bottom.set_title(f"{runtime}: FLOPs against measured, tau {r['kendall_tau_flops']:.2f}", fontsize=10)
        bottom.set_xlabel("FLOPs at 32 px (M multiply-accumulates)")
        bottom.set_ylabel("measured latency, batch 1 (ms)")
    fig.suptitle(f"{len(next(iter(runs.values()))['points'])} architectures of the evaluation table, "
                 "Fashion-MNIST 32 px, 1 thread", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="predictor,noise",
                        help="comma-separated: predictor, noise, searches, family")
    parser.add_argument("--target-ms", type=float, default=None,
                        help="searches: the latency target (default: the median measured latency of the table)")
    parser.add_argument("--search-budget", default="12m", help="searches: each search's time budget (12m)")
    parser.add_argument("--runtimes", default="eager,onnxruntime", help="comma-separated runtimes")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    parts, runtimes = args.parts.split(","), args.runtimes.split(",")
    unknown = [p for p in parts if p not in ("predictor", "noise", "searches", "family")] + [
        r for r in runtimes if r not in ("eager", "onnxruntime")]
    if unknown:
        print(f"latency: unknown part or runtime {', '.join(unknown)}", file=sys.stderr)
        return 2
    results = read_json(args.out) if Path(args.out).exists() else {}
    for part in parts:
        for runtime in runtimes:
            if part == "searches":
                points = results["predictor"][runtime]["points"]
                target = args.target_ms or round(statistics.median(p["measured_ms"] for p in points), 1)
                outcome = searches_part(runtime, results, target, args.search_budget)
            else:
                outcome = {"predictor": predictor, "noise": noise, "family": family_part}[part](runtime)
            results.setdefault(part, {})[runtime] = outcome
            write_json(args.out, results)
    if "predictor" in results:
        plot(results, Path(args.out).with_suffix(".png"))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
