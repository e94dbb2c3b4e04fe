"""Render every results table of the docs from the committed bench JSON, so a figure in the docs is the figure in
the JSON.

Run: .venv/bin/python bench/results_pages.py [--check]
Writes docs/results/tables/<bench>.md, one Markdown table (with the provenance line of its JSON) per bench, which
the results pages include; the README's results table; the benches' figures beside the pages; and every figure
quoted in prose. `--check` writes nothing and exits 1 naming every table or figure that differs from what the JSON
renders (the test suite runs it).

A figure quoted in the prose of README.md or docs/ is marked with the JSON it comes from, so that it cannot drift:

    tau <!-- figure supernet_fidelity/budgets/centre/4/tau_seed0 | .2f -->0.07<!-- /figure -->

names bench/supernet_fidelity.json, a JSON pointer into it (RFC 6901: "~1" for "/" inside a key) and a format spec.
The comments are invisible on GitHub and on the docs site.
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_json import HERE, ROOT, read_json

TABLES = ROOT / "docs" / "results" / "tables"
Row = list[str]


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def mean_sd(value: dict[str, float], digits: int = 4) -> str:
    return f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"


def millions(count: float) -> str:
    return f"{count / 1e6:.1f}M" if count < 1e9 else f"{count / 1e9:.2f}G"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def provenance(results: dict[str, Any]) -> str:
    return (f"*From `{results.get('command')}` on {results.get('date')}, {results.get('machine')}, commit "
            f"`{results.get('commit')}`.*")


def final_training(r: dict[str, Any]) -> str:
    rows = []
    for key, label in (("found_b0", "found B0"), ("efficientnet_b0", "EfficientNet-B0 at 32 px")):
        run = r[key]
        rows.append([label, f"{run['test_accuracy']:.4f}", f"{run['params']:,}", millions(run["flops"]),
                     minutes(run["seconds"]), f"{run['seconds'] / run['epochs']:.0f} s"])
    setup = r["setup"]
    kept = r["efficientnet_b0"].get("measured")
    note = (f"\n\nEfficientNet-B0's row was kept (`--keep-baseline`) from the run of {kept['date']} (commit "
            f"{kept['commit']}), trained with the same recipe on the same data; its training time is that run's "
            "machine's." if kept else "")
    return (f"{setup['data']}; {setup['epochs']} epochs; the found B0 from `{setup['search']}` "
            f"({minutes(r['search_seconds'])} of search). FLOPs: {setup['flops']}; accuracy: trained, on the test "
            "split.\n\n" + table(["network", "test accuracy", "params", "FLOPs at 32 px", "training", "per epoch"],
                                 rows) + note)


FAMILY_LABELS = {
    "found-paper": "found {m}, paper coefficients", "found-grid": "found {m}, grid-fitted",
    "found-width": "found {m}, width only", "found-resolution": "found {m}, resolution only",
    "found-depth": "found {m}, depth only", "found-paper-capped": "found {m}, paper coefficients, at most 32 px",
    "efficientnet-official": "EfficientNet-{m}, official table",
}


def family_scaling(r: dict[str, Any]) -> str:
    findings = r["findings"]
    found = findings["table"]
    parts = []
    for budget, spec in r["setup"]["budgets"].items():
        rows = []
        for key, cell in found.items():
            family, member, at = key.split("/")
            if at == budget:
                rows.append([FAMILY_LABELS[family].format(m=member), str(cell["resolution"]), millions(cell["flops"]),
                             f"{cell['params'] / 1e6:.2f}M", f"{cell['mean']:.4f} ± {cell['sd']:.4f}",
                             str(cell["seeds"]), family])
        if not rows:
            continue
        order = list(FAMILY_LABELS)
        rows.sort(key=lambda row: (row[0].startswith("Eff"), row[0].split(",")[0], order.index(row[-1])))
        rows = [row[:-1] for row in rows]
        parts.append(f"**{budget.capitalize()} budget**: {spec['label']}, {spec['val_images']:,} validation images "
                     "held out; test accuracy on t10k, mean ± sd over seeds."
                     "\n\n" + table(["network", "resolution", "FLOPs", "params", "test accuracy", "seeds"], rows))
    rankings = []
    for budget, spec in r["setup"]["budgets"].items():
        ranked = findings.get(f"rule ranking at phi=2 ({spec['label']})")
        if ranked:
            rankings.append([f"{budget} ({spec['label']})", " > ".join(
                f"{row['rule']} {row['mean']:.4f} ± {row['sd']:.4f}" for row in ranked)])
    if rankings:
        parts.append("**The rules at phi = 2** (the found B2 by each rule, best first):\n\n"
                     + table(["budget", "ranking"], rankings))
    grids = [r[key] for key in ("grid", "grid_medium") if key in r]
    if grids:
        images, held_out = (int(option_value(grids[0]["args"], option))
                            for option in ("--grid-subset", "--grid-val-images"))
        parts.append("**The training-scored grid** (`--coefficients grid --grid-scoring training`: each point's B1 "
                     f"trained on {images:,} images, validated on {held_out:,}): validation accuracy of the points "
                     "that deepen (alpha > 1) against those that do not.\n\n" + table(
                         ["epochs per point", "points", "chosen (alpha, beta, gamma)", "alpha = 1", "alpha > 1",
                          "minutes on 2 cores"], [grid_row(g) for g in grids]))
    chosen = findings.get("default rule")
    if chosen:
        parts.append(f"**`scaling.grow`'s default**: {chosen['rule']}, from the {chosen['budget']} budget "
                     f"({chosen['budget_label']}): {chosen['why']}. The grid-fitted B2 is "
                     f"{chosen['grid-fitted B2']}.")
    hours = findings.get("medium: hours of training, summed over runs")
    if hours is not None:
        parts.append(f"The medium budget's runs so far: {hours:.1f} hours summed over runs, "
                     f"{findings['medium: wall-clock hours the runs took (2 cores)']:.1f} hours of wall clock on 2 "
                     "cores (two one-thread runs at a time).")
    return f"FLOPs: {r['setup']['flops']}.\n\n" + "\n\n".join(parts)


def option_value(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def grid_row(grid: dict[str, Any]) -> list[str]:
    """One grid's epochs, chosen coefficients, the accuracy range with and without deepening, and its cost."""
    c = grid["coefficients"]
    done = [point for point in grid["points"] if point["val_accuracy"] is not None]

    def spread(points: list[dict[str, Any]]) -> str:
        accuracies = [point["val_accuracy"] for point in points]
        return f"{min(accuracies):.3f}-{max(accuracies):.3f}" if accuracies else ""

    return [option_value(grid["args"], "--grid-epochs"), str(len(done)), f"{c['alpha']:g}, {c['beta']:g}, {c['gamma']:g}",
            spread([p for p in done if p["alpha"] == 1.0]), spread([p for p in done if p["alpha"] > 1.0]),
            f"{grid['seconds'] / 60:.0f}"]


def search_confirm(r: dict[str, Any]) -> str:
    s = r["summary"]
    p = s["tpe"].get("p_value_against_random", {})
    rows = []
    for key, label, digits in (("hypervolume", "hypervolume", 3), ("best_reward", "best reward (proxy)", 3),
                               ("winner_test_reward", "winner's reward after full training", 3),
                               ("winner_test_accuracy", "winner's test accuracy", 3),
                               ("trials_within_target", "candidates trained within the target", 1)):
        pv = p.get(key)
        rows.append([label, mean_sd(s["tpe"][key], digits), mean_sd(s["random"][key], digits),
                     f"{pv:.3g}" if pv is not None else ""])
    return (f"`{r['setup']['search']}`, search seeds 0-{s['tpe']['seeds'] - 1}; winners retrained with "
            f"{r['setup']['reference']}. FLOPs: {r['setup']['flops']}.\n\n"
            + table(["", "tpe", "random", "one-sided Mann-Whitney p"], rows))


def search_surrogate(r: dict[str, Any]) -> str:
    rows = []
    # The summary holds each statistic after every evaluation; the table gives the last.
    for name, s in sorted(r["summary"].items(), key=lambda item: -item[1]["hypervolume"]["median"][-1]):
        to = s["evaluations_to_random_median_at_end"]
        p = s.get("p_value_against_random_at_end", {})

        def cell(key: str) -> str:
            return f"{s[key]['median'][-1]:.3f} [{s[key]['q25'][-1]:.3f}, {s[key]['q75'][-1]:.3f}]"

        rows.append([name, cell("best_reward"), cell("handed_over_true_reward"), cell("hypervolume"),
                     str(to["best_reward"] or "never"), f"{p['best_reward']:.2g}" if p else "",
                     f"{s['seconds_per_search']:.1f}"])
    setup = r["setup"]
    return (f"`{setup['search']}` with a {setup['surrogate']} surrogate fitted on {setup['table_entries']} entries of "
            f"`{setup['table']}` answering, plus noise of sd {setup['noise_sd']:.3f}; {setup['evaluations']} "
            f"evaluations, {r['summary']['random']['seeds']} seeds; median [interquartile range] at the last "
            "evaluation.\n\n" + table(["strategy", "best reward", "handed-over true reward", "hypervolume",
                                        "evaluations to random's median best", "p against random",
                                        "s per search"], rows))


PROXY_LABELS = {
    "sgd": "SGD proxy", "adamw": "AdamW proxy (default): 3 epochs, 4,000 train / 1,000 validation",
    "adamw_val4k": "AdamW, 3 epochs, 4,000 validation images", "adamw_2ep_val4k": "AdamW, 2 epochs, 4,000 validation",
    "zero-cost-naswot": "NASWOT", "zero-cost-synflow": "synflow", "zero-cost-grad_norm": "grad_norm",
    "flops": "FLOPs", "params": "params",
}


def proxy_fidelity(r: dict[str, Any]) -> str:
    rows = []
    for key, s in r["scores"].items():
        base = key.removesuffix(" (mean of 2 seeds)")
        label = PROXY_LABELS.get(base, base) + (", mean of 2 seeds" if base != key else "")
        interval = s.get("kendall_tau_90") or [None, None]
        two = s.get("kendall_tau_vs_two_seed_reference")
        seed = s.get("seed_to_seed_tau")
        rows.append([label, f"{s['kendall_tau']:.2f}",
                     f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval[0] is not None else "",
                     f"{two:.2f}" if two is not None else "", f"{seed:.2f}" if seed is not None else "",
                     f"{s['seconds_per_candidate']:.1f}" if s.get("seconds_per_candidate") is not None else ""])
    noise = r["reference_noise"]
    setup = r["setup"]
    return (f"{setup['architectures']}; reference: {setup['reference']}. Kendall tau against the seed-0 reference "
            "(bootstrap 90 % interval) and against the mean of both reference seeds; the reference's own seed-to-seed "
            f"tau is {noise['reference_seed_to_seed_tau']:.2f}.\n\n"
            + table(["score", "tau", "90 %", "tau vs 2-seed reference", "seed-to-seed tau", "s / candidate"], rows))


def stem_stride(r: dict[str, Any]) -> str:
    rows = [[str(c["resolution"]), str(c["stem_stride"]), f"{c['head_map']}x{c['head_map']}", millions(c["flops"]),
             f"{c['val_accuracy']:.4f}", minutes(c["seconds"])] for c in r["cases"].values()]
    setup = r["setup"]
    return (f"{setup['network']}, {setup['train_images']:,} {setup['data']} images x {setup['epochs']} epochs, "
            f"validation accuracy on {setup['val_images']:,}; one seed. FLOPs: {setup['flops']}.\n\n"
            + table(["resolution", "stem stride", "map before the head", "FLOPs", "validation accuracy", "training"],
                    rows))


def search_efficacy_adamw(r: dict[str, Any]) -> str:
    parts = []
    for task, strategies in r["tasks"].items():
        rows = []
        for name, s in sorted(strategies.items(), key=lambda item: -item[1]["best_reward"]["mean"]):
            ratios = ", ".join(f"{seed['winner_flops_over_target']:.2f}" for seed in s["seeds"])
            rows.append([name, mean_sd(s["best_reward"], 3), mean_sd(s["hypervolume"], 3), ratios])
        parts.append(f"**{task}** ({r['setup']['tasks'][task]})\n\n"
                     + table(["strategy", "best reward", "hypervolume", "winner FLOPs / target, per seed"], rows))
    return (f"{r['setup']['trials']} trials per search, seeds {', '.join(map(str, r['setup']['seeds']))}. "
            f"FLOPs: {r['setup']['flops']}.\n\n" + "\n\n".join(parts))


def surrogate_fit(r: dict[str, Any]) -> str:
    rows = [[m["model"], m["zero_cost"], f"{m['tau_mean']:.3f} ± {m['tau_sd']:.3f}"] for m in r["models"]]
    rows += [[name, "", f"{ref['tau']:.3f} ({ref['entries']} entries)"] for name, ref in r["references"].items()]
    chosen = r["chosen"]
    return (f"{r['folds']}-fold held-out Kendall tau on {r['entries']} entries of `{r['table']}`, {r['repeats']} "
            f"repeats. Chosen: {chosen['model']} with {chosen['zero_cost']} zero-cost scores, tau {chosen['tau']:.3f} "
            f"= {chosen['ratio_to_seed_tau']:.2f}x the proxy's seed-to-seed tau.\n\n"
            + table(["surrogate", "zero-cost features", "tau"], rows))


def supernet_fidelity(r: dict[str, Any]) -> str:
    rows = []
    for kind, budgets in r["budgets"].items():
        for epochs, row in sorted(budgets.items(), key=lambda item: int(item[0])):
            per = row["seconds_per_candidate"]
            rows.append([f"supernet, {epochs} epoch(s), kernel {kind}", f"{row['tau_seed0']:.3f}",
                         f"{row['tau_two_seed_mean']:.3f}", f"{row['seconds_per_epoch']:.0f} s",
                         f"{per['median']:.2f} s (p90 {per['p90']:.2f} s)", f"`{row['command']}`"])
    rows += [[name, f"{ref['tau']:.3f}", "", "", "", ""] for name, ref in r["references"].items()]
    first = next(iter(next(iter(r["budgets"].values())).values()))
    return (f"Kendall tau against the proxy accuracy of the {first['entries']} entries of `{r['table']}` (seed 0) "
            f"and of the {first['entries_two_seeds']} trained at two seeds (their mean); task `{r['task']}`, stem "
            f"stride {r['stem_stride']}; a path scored after re-estimating BatchNorm on {r['calibration_images']} "
            "training images, on the search's 1,000 validation images.\n\n"
            + table(["scorer", "tau vs seed 0", "tau vs two-seed mean", "per supernet epoch", "per candidate",
                     "measured by"], rows)
            + supernet_interference(r.get("interference", {}))
            + supernet_paths(r.get("paths", {}))
            + supernet_dimensions(r.get("dimensions", {}))
            + "".join(f"\n\nOn `{name}`:\n\n" + supernet_fidelity(other)
                      for name, other in r.get("other_tables", {}).items()))


def supernet_search(r: dict[str, Any]) -> str:
    """Each finished run of bench/supernet_search.py, then the per-method summary over them."""
    setup = r["setup"]

    def runs_table(runs: dict[str, Any]) -> str:
        rows = []
        for key, run in runs.items():
            method, budget, seed = key.split("/")
            reference = run.get("reference", {})
            reuses = [value for name, value in run.items() if name.startswith("reuse_at_4M")]
            rows.append([method, budget, seed, minutes(run["seconds"]), str(run["candidates"]),
                         str(run["proxy_trained"]), "" if run["best_reward"] is None else f"{run['best_reward']:.4f}",
                         "" if run["winner"] is None else
                         f"{run['winner']['flops'] / 1e6:.1f}M, {run['winner']['proxy_accuracy']:.3f}",
                         f"{run['hypervolume']:.3f}",
                         f"{sum(reference.values()) / len(reference):.4f}" if reference else "not retrained yet",
                         "; ".join(f"{reuse.get('time_budget', budget)} budget: {minutes(reuse['seconds'])}, "
                                   f"{reuse['candidates']} weighed, {reuse['proxy_trained']} proxy-trained"
                                   for reuse in reuses)])
        return table(["method", "budget", "seed", "wall time", "candidates weighed", "proxy-trained", "best reward",
                      "winner's FLOPs, proxy accuracy", "hypervolume", "winner's test accuracy", "reuse at 4M"], rows)

    text = (f"`{setup['search']}`; methods: "
            + "; ".join(f"{name}: `{args}`" for name, args in setup["methods"].items())
            + f" (the default supernet epochs at every budget). FLOPs: {setup['flops']}. Winners retrained at "
            + f"reference seed {setup['retrain_seeds']}. "
            + "Each run as it finished:\n\n" + runs_table(r["runs"]))
    superseded = r.get("superseded", {})
    if superseded:
        commits = sorted({run["redone_after"] for run in superseded.values()})
        text += (f"\n\nSet aside and run again after a change to what they measure (`--redo`, at {', '.join(commits)}); "
                 "not in the summary:\n\n" + runs_table(superseded))
    summary = r.get("summary", {})
    if summary:
        def cell(row: dict[str, Any], metric: str) -> str:
            if metric not in row:
                return "none yet"
            runs = len(row[metric]["values"])
            return mean_sd(row[metric], 3) + ("" if runs == row["seeds"] else f" ({runs} of them)")

        summary_rows = [[key, str(row["seeds"]), *(cell(row, metric) for metric in
                                                   ("candidates", "best_reward", "winner_proxy_accuracy",
                                                    "hypervolume", "winner_test_accuracy")),
                         *(", ".join(f"{metric} {p:.3g}" for metric, p in row.get(side, {}).items())
                           for side in ("p_value_against_tpe", "p_value_below_tpe")),
                         f"{row['smallest_possible_p']:.3g}" if "smallest_possible_p" in row else ""]
                        for key, row in summary.items()]
        text += "\n\n" + table(["method/budget", "seeds", "candidates weighed", "best reward",
                                  "winner's proxy accuracy", "hypervolume", "winner's test accuracy",
                                  "one-sided Mann-Whitney p: above tpe", "below tpe", "lowest p possible"],
                                 summary_rows)
        reuse_rows = [[key, f"{reuse['budget_fraction']:g} of the first's", str(reuse["runs"]),
                       mean_sd(reuse["candidates"], 0), mean_sd(reuse["candidates_over_first"], 2),
                       mean_sd(reuse["seconds"], 0), mean_sd(reuse["seconds_over_first"], 2),
                       str(reuse["fewest_proxy_trained"])]
                      for key, row in summary.items() for reuse in row.get("reuse", {}).values()]
        if reuse_rows:
            text += ("\n\nReuse: a second search at 4M on each supernet run's stored supernet, given the first "
                     "run's time budget or a part of it; x first: as a fraction of the first run's figure.\n\n"
                     + table(["method/budget", "time budget", "runs", "candidates weighed", "x first",
                              "wall seconds", "x first", "fewest proxy-trained"], reuse_rows))
    return text


def supernet_interference(by_budget: dict[str, Any]) -> str:
    """`--interference`: how paths of pinned sub-spaces score on their own supernets."""
    if not by_budget:
        return ""
    rows = [[f"{budget.split()[0]} epoch(s)", name, str(row["paths"]), f"{row['mean']:.3f} +- {row['sd']:.3f}",
             f"{row['min']:.3f}-{row['max']:.3f}", f"{row['seconds_per_epoch']:.0f} s", f"`{row['command']}`"]
            for budget, subspaces in by_budget.items() for name, row in subspaces.items()]
    return ("\n\nInterference (`--interference`): paths drawn uniformly from each sub-space (dimensions pinned in "
            "every stage, as `nas.search --fix` pins them), scored on a supernet of that sub-space trained at the "
            "same budget.\n\n"
            + table(["supernet budget", "sub-space", "paths", "accuracy (mean +- sd)", "range", "per supernet epoch",
                     "measured by"], rows))


def supernet_dimensions(by_budget: dict[str, Any]) -> str:
    """`--dimensions`: the sandwich's paths with one dimension moved in every stage, per supernet measured."""
    if not by_budget:
        return ""
    columns = [(budget, base) for budget in sorted(by_budget, key=lambda key: int(key.split()[0]))
               for base in ("largest", "smallest")]
    probes = list(dict.fromkeys(probe for budget, base in columns for probe in by_budget[budget]["paths"][base]))
    rows = [[probe, *(f"{by_budget[budget]['paths'][base][probe]:.3f}"
                      if probe in by_budget[budget]["paths"][base] else "" for budget, base in columns)]
            for probe in probes]
    return ("\n\nSharing, dimension by dimension (`--dimensions`): the sandwich's largest and smallest paths, then "
            "each with one dimension moved to another value in every stage, on the whole-space supernet. Measured "
            "by " + "; ".join(f"`{r['command']}`" for r in by_budget.values()) + ".\n\n"
            + table(["path", *(f"{base}, {budget.replace(' epochs', ' epoch(s)')}" for budget, base in columns)],
                    rows))


def supernet_paths(by_budget: dict[str, Any]) -> str:
    """`--paths`: the sandwich's own paths against the rest, and where a scoring's seconds go."""
    if not by_budget:
        return ""
    text = ""
    for budget, r in by_budget.items():
        rows = [[name, f"{row['accuracy']:.3f}", millions(row["flops"]), f"{row['recalibration_seconds']:.2f} s",
                 f"{row['validation_seconds']:.2f} s"]
                for name, row in r["paths"].items() if not name.startswith("uniform")]
        uniform = [row for name, row in r["paths"].items() if name.startswith("uniform")]
        spread = r["uniform_accuracy"]
        rows.append([f"{len(uniform)} drawn uniformly", f"{spread['mean']:.3f} +- {spread['sd']:.3f}",
                     f"{millions(min(row['flops'] for row in uniform))}-"
                     f"{millions(max(row['flops'] for row in uniform))}",
                     f"{statistics.median(row['recalibration_seconds'] for row in uniform):.2f} s (median)",
                     f"{statistics.median(row['validation_seconds'] for row in uniform):.2f} s (median)"])
        text += (f"\n\nPaths (`--paths`) on the whole-space supernet of {budget.replace(' epochs', ' epoch(s)')} "
                 f"({r['seconds_per_epoch']:.0f} s per epoch): "
                 + ("the sandwich's two paths, which this training treats as any other, against the rest"
                    if "uniform sampling" in budget else "the two the sandwich rule trains every step against the rest")
                 + f". A scoring is one forward pass over {r['images_per_candidate']:,} images (BatchNorm "
                 f"re-estimation, then validation), at a median {r['gmacs_per_second']:.1f} G multiply-accumulates "
                 f"per second. `{r['command']}`\n\n"
                 + table(["path", "accuracy", "FLOPs", "BatchNorm re-estimation", "validation"], rows))
    return text


def surrogate_winners(r: dict[str, Any]) -> str:
    rows = [[n["strategy"], str(n["searches"]), millions(n["flops"]), f"{n['reward_seen_on_surrogate']:.3f}",
             f"{n['proxy_reward']:.3f}", f"{n['proxy_accuracy']:.3f}"] for n in r["networks"]]
    return (f"Task: `{r['task']}`; proxy seed {r['proxy_seed']}; FLOPs: {r['flops']}. The best reward in the "
            f"evaluation table is {r['best_reward_in_evaluation_table']:.3f}.\n\n"
            + table(["strategy", "handed over in searches", "FLOPs", "reward on the surrogate", "real proxy reward",
                     "real proxy accuracy"], rows))


def search_speed(r: dict[str, Any]) -> str:
    per = r["seconds_per_trial"]
    text = table(["search", "strategy", "evaluator", "wall time", "candidates weighed", "proxy-trained",
                  "train s per proxy-trained trial (mean, max)", "build + evaluate s per proxy-trained trial"],
                 [[f"`{r['search']}`", r["strategy"], r["evaluator"], minutes(r["wall_seconds"]),
                   str(r["candidate_trials"]), str(r["proxy_trained_candidates"]),
                   f"{per['train']['mean']:.1f}, {per['train']['max']:.1f}",
                   f"{per['build']['mean'] + per['evaluate']['mean']:.2f}"]])
    scoring = r["seconds_per_supernet_score"]
    return (text + "\n\nWhere the wall time went" + (f" (one candidate scored on the supernet in "
                                                      f"{scoring['mean']:.2f} s on average, {scoring['max']:.2f} s "
                                                      "at most)" if scoring else "") + ":\n\n"
            + table(["", "seconds", "share"], [[what, f"{seconds:.0f}", f"{seconds / r['wall_seconds']:.0%}"]
                                              for what, seconds in r["seconds_spent"].items()]))


def proxy_time_estimate(r: dict[str, Any]) -> str:
    rows = [[n["winner_of"], f"{n['flops'] / 1e6:.1f}M", f"{n['estimate_seconds']:.1f}",
             f"{n['estimating_seconds']:.1f}", f"{n['actual_seconds']:.1f}", f"{n['ratio']:.2f}"]
            for n in r["networks"]]
    ratio = r["ratio"]
    return (f"{r['task']}, {r['threads']} threads; FLOPs: {r['flops']}. Actual / estimate: mean {ratio['mean']:.2f} "
            f"± {ratio['sd']:.2f}, at most {ratio['max']:.2f}.\n\n"
            + table(["winner of", "FLOPs", "estimate (s)", "estimating took (s)", "proxy training (s)",
                     "actual / estimate"], rows))


def fidelity_budget(r: dict[str, Any]) -> str:
    rows = [[mode, f"{s['candidates']['mean']:.1f} ± {s['candidates']['sd']:.1f}",
             f"{s['full_proxy']['mean']:.1f} ± {s['full_proxy']['sd']:.1f}", mean_sd(s["best_reward"], 3)]
            for mode, s in r["summary"].items()]
    strategy = r["setup"].get("strategy", "reinforce, the default then")
    return (f"`{r['setup']['search']}` (strategy: {strategy}), {r['summary']['full']['seeds']} seeds. "
            f"FLOPs: {r['setup']['flops']}.\n\n"
            + table(["fidelity", "candidates in the budget", "on the full proxy", "winner's reward"], rows))


def parallel_trials(r: dict[str, Any]) -> str:
    return table(["search", "--workers 1", f"--workers {r['workers']}", "throughput ratio", "same architectures",
                  "lost or duplicated rows"],
                 [[f"`{r['search']}`", minutes(r["wall_seconds"]["1"]), minutes(r["wall_seconds"][str(r["workers"])]),
                   f"{r['throughput_ratio']:.2f}x", "yes" if r["same_architectures"] else "no",
                   ", ".join(f"{k}: {v}" for k, v in r["row_problems"].items()) or "none"]])


def flops_counters(r: dict[str, Any]) -> str:
    us = r["microseconds_per_spec"]
    return (f"{r['flops_convention']}: {r['flops']:,}.\n\n"
            + table(["counter", "µs per spec"], [["analytic (`count_flops`)", f"{us['analytic']:.0f}"],
                                                 ["thop, build and profile", f"{us['thop_build_and_profile']:.0f}"],
                                                 ["thop, profile only", f"{us['thop_profile_only']:.0f}"]]))


def export_memory(r: dict[str, Any]) -> str:
    rows = [[name, f"{m['params'] / 1e6:.1f}M", f"{m['seconds']:.1f}", f"{m['peak_mib']:.0f}"]
            for name, m in r["members"].items()]
    return f"Formats: {', '.join(r['formats'])}.\n\n" + table(["member", "params", "seconds", "peak MiB"], rows)


def export_int8(r: dict[str, Any]) -> str:
    setup = r["setup"]
    rows = [[m["member"], millions(m["flops"]), f"{m['params'] / 1e6:.2f}M", str(m["resolution"]),
             f"{m['float_test_accuracy']:.4f}", f"{m['int8_test_accuracy']:.4f}",
             f"{100 * (m['int8_test_accuracy'] - m['float_test_accuracy']):+.2f}",
             f"{m['float_bytes'] / 1e6:.2f} MB", f"{m['int8_bytes'] / 1e6:.2f} MB"] for m in r["members"]]
    return (f"The family of the {setup['network']}, B0-B{setup['phi_max']} by the paper's coefficients, each trained {setup['epochs']} epochs on "
            f"{setup['subset']:,} Fashion-MNIST images (seed {setup['seed']}); accuracy on the 10k test images. "
            f"FLOPs: {setup['flops']}.\n\n"
            + table(["member", "FLOPs", "params", "px", "float test acc.", "int8 test acc.", "points", "float size",
                     "int8 size"], rows))


def dashboard_pareto(r: dict[str, Any]) -> str:
    b = r["browser_seconds"]
    return table(["trials", "Pareto front", "page script (s, 3 runs)", "fresh page load", "first click",
                  "later click"],
                 [[f"{r['trials']:,}", f"{r['pareto_front_ms']:.1f} ms", ", ".join(f"{s:.2f}" for s in
                                                                                  r["page_script_seconds"]),
                   f"{b['fresh_page_load']:.1f} s", f"{b['first_click']:.1f} s", f"{b['later_click']:.1f} s"]])


def training_memory(r: dict[str, Any]) -> str:
    rows = [[name, f"{c['resolution']} px", f"{c['images_loaded']:,}", f"{c['peak_rss_gib']:.2f} GiB"
             + (f" (+{c['worker_peak_rss_gib']:.2f} GiB workers)" if c["worker_peak_rss_gib"] else ""),
             f"{c['images_per_second']:.1f}"] for name, c in r["cases"].items()]
    before = r["before"]
    rows += [[f"{name}, before (commit {before['commit']})", f"{c['resolution']} px", f"{c['images_loaded']:,}",
              f"{c['peak_rss_gib']:.2f} GiB", f"{c['images_per_second']:.1f}" if "images_per_second" in c else ""]
             for name, c in before["cases"].items()]
    return (f"{r['model']}. Before: {before['how']}; {before['note']}.\n\n"
            + table(["case", "resolution", "images loaded", "peak memory", "images/s"], rows))


def distributed_training(r: dict[str, Any]) -> str:
    rows = [[name, f"{c['images_per_second']:.0f}", minutes(c["seconds_to_target"]) if c["seconds_to_target"] else "",
             f"{c['test_accuracy']:.4f}"] for name, c in r["cases"].items()]
    setup = r["setup"]
    return (f"{setup['network']}; {setup['data']}; {setup['epochs']} epochs, global batch {setup['global_batch']}, "
            f"{setup['device']}. Speed-up {r['speedup']:.2f}x, scaling efficiency {r['scaling_efficiency']:.2f}.\n\n"
            + table(["processes", "images/s", f"to {r['target_val_accuracy']} validation accuracy", "test accuracy"],
                    rows))


def latency(r: dict[str, Any]) -> str:
    rows = [[runtime, f"{p['networks']}", f"{p['measured_ms']['min']:.2f}–{p['measured_ms']['max']:.2f} "
             f"(median {p['measured_ms']['median']:.2f})", f"{p['within_10_percent']:.1%}",
             f"{p['within_10_percent_raw']:.1%}", f"{p['rmse_ms']:.3f}",
             f"{p['kendall_tau_predicted']:.3f}", f"{p['kendall_tau_flops']:.3f}"]
            for runtime, p in r.get("predictor", {}).items()]
    text = ("Batch 1, 1 thread, the evaluation table's architectures at 32 px (stem stride 1); the table calibrated on "
            "24 other networks of the space (its fit: " + "; ".join(p["fit"] for p in r.get("predictor", {}).values())
            + ").\n\n" + table(
                ["runtime", "networks", "measured ms", "predicted within ±10 %", "within ±10 % (raw)", "RMSE ms",
                 "τ predicted", "τ FLOPs"], rows))
    noise = r.get("noise", {})
    if noise:
        text += ("\n\nThe same network (the space's EfficientNet-B0) measured in 5 separate processes, each scaled "
                 "to the reference speed stored in the database; beside it, the deviation had each process scaled to "
                 "its own measurement of the reference, and unscaled:\n\n" + table(
                     ["runtime", "medians (ms)", "largest deviation from their median", "own reference",
                      "raw medians (ms)", "largest raw deviation"],
                     [[runtime, ", ".join(f"{m['median_ms']:.3f}" for m in n["processes"]), f"{n['max_deviation']:.1%}",
                       f"{n['per_process_max_deviation']:.1%}",
                       ", ".join(f"{m['raw_median_ms']:.3f}" for m in n["processes"]), f"{n['raw_max_deviation']:.1%}"]
                      for runtime, n in noise.items()]))
    for runtime, families in r.get("family", {}).items():
        text += (f"\n\nTwo families of the family bench, each member with the task's channels and classes, measured "
                 f"({runtime}, 1 thread) at its resolution:\n\n" + table(
                     ["family", "member", "FLOPs", "params", "ms at batch 1", "ms at batch 32"],
                     [[name, m["name"], f"{millions(m['flops'])} at {m['resolution']} px", millions(m["params"]),
                       f"{m['batch_1_ms']:.2f}", f"{m['batch_32_ms']:.1f}"]
                      for name, family in families.items() for m in family["members"]]))
    for runtime, s in r.get("searches", {}).items():
        text += (f"\n\nSearches ({runtime}, hard constraint, {s['budget']} each, seed 0): latency target "
                 f"{s['target_ms']} ms against FLOPs target {millions(s['flops_target'])} (the median FLOPs of the "
                 "table's networks measured within ±10 % of that latency):\n\n" + table(
                     ["target", "candidates", "winner measured ms", "× target", "FLOPs", "proxy accuracy",
                      "accuracy per ms"],
                     [[label, f"{run['candidates']}", f"{run['measured_ms']:.3f}", f"{run['measured_over_target']:.2f}",
                       millions(run["flops"]), f"{run['proxy_accuracy']:.4f}", f"{run['accuracy_per_ms']:.4f}"]
                      for label, run in (("latency", s["latency_target"]), ("FLOPs", s["flops_target_search"]))]))
    return text


def nni_patches(r: dict[str, Any]) -> str:
    rows = []
    for name, patch in r["patches"].items():
        tests = patch["without_the_patch"]
        outcomes = (", ".join(f"`{test.split('::')[1]}` {outcome}" for test, outcome in tests.items()) if patch["file"]
                    else ", ".join(f"{list(tests.values()).count(kind)} {kind}" for kind in sorted(set(tests.values())))
                    + f" (all {len(tests)} tests above)")
        verdict = "control" if not patch["file"] else "yes" if patch["guarded"] else "**no**"
        rows.append([name, f"`{patch['file'].split('/')[-1]}`" if patch["file"] else "", outcomes, verdict])
    return ("Each patch taken out of a copy of the checkout, and the tests its comment names run against the copy "
            "(the control: every test, nothing taken out).\n\n"
            + table(["patch", "file", "tests without it", "guarded"], rows))


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "final_training": final_training, "family_scaling": family_scaling, "search_confirm": search_confirm,
    "search_surrogate": search_surrogate, "proxy_fidelity": proxy_fidelity, "stem_stride": stem_stride,
    "search_efficacy_adamw": search_efficacy_adamw, "surrogate_fit": surrogate_fit,
    "surrogate_winners": surrogate_winners, "search_speed": search_speed,
    "search_speed_fashion_mnist": search_speed, "fidelity_budget": fidelity_budget, "proxy_time_estimate": proxy_time_estimate,
    "parallel_trials": parallel_trials, "flops_counters": flops_counters, "export_memory": export_memory,
    "export_int8": export_int8,
    "dashboard_pareto": dashboard_pareto, "training_memory": training_memory,
    "distributed_training": distributed_training, "supernet_fidelity": supernet_fidelity, "latency": latency,
    "supernet_search": supernet_search,
    "nni_patches": nni_patches,
}


# Figures the results pages show, copied beside them as the benches drew them.
FIGURES = ("search_surrogate.png", "family_scaling.png", "proxy_fidelity.png", "latency.png")


README = ROOT / "README.md"
README_MARKERS = ("<!-- results table: bench/results_pages.py writes it -->\n", "<!-- end of results table -->\n")


def readme_table() -> str:
    """The README's one table: the found B0 against EfficientNet-B0 trained to the end, and the found family's best
    member against EfficientNet's best, at the longest budget both were trained at, from the same JSON as the
    results pages."""
    final = read_json(results_path("final_training"))
    rows = []
    for key, label in (("found_b0", "found B0"), ("efficientnet_b0", "EfficientNet-B0")):
        run = final[key]
        rows.append([label, f"{final['setup']['epochs']} epochs, all 55k images", f"**{run['test_accuracy']:.4f}**",
                     f"{run['params'] / 1e6:.2f}M", millions(run["flops"])])
    family = read_json(results_path("family_scaling"))
    found = family["findings"]["table"]
    # The longest budget at which both families have trained members: the best of each.
    for at in ("full", "medium", "long", "short"):
        best, rival = (max((key for key in found if key.startswith(prefix) and key.endswith(f"/{at}")),
                           key=lambda key: found[key]["mean"], default=None)
                       for prefix in ("found", "efficientnet-official"))
        if best and rival:
            break
    kind, member, _ = best.split("/")
    rival_member = rival.split("/")[1]
    for key, label in ((best, f"found family's best: {FAMILY_LABELS[kind].format(m=member)}"),
                       (rival, f"EfficientNet's best: EfficientNet-{rival_member}, official table")):
        cell = found[key]
        rows.append([label, f"{family['setup']['budgets'][at]['label']}, {cell['seeds']} seeds",
                     f"{cell['mean']:.4f} ± {cell['sd']:.4f}", f"{cell['params'] / 1e6:.2f}M", millions(cell["flops"])])
    return table(["network (Fashion-MNIST, 32 px)", "training", "test accuracy", "params", "FLOPs at 32 px"], rows)


def with_readme_table(text: str) -> str:
    """The README with its results table rendered between the markers."""
    start, end = README_MARKERS
    head, rest = text.split(start, 1)
    return head + start + readme_table() + "\n" + end + rest.split(end, 1)[1]


PROSE = [README, *sorted(path for path in (ROOT / "docs").rglob("*.md") if not path.is_relative_to(TABLES))]
PROSE_FIGURE = re.compile(r"(?P<open><!-- figure (?P<ref>[^|>]+?) \| (?P<spec>\S*) -->).*?<!-- /figure -->")


class FigureError(Exception):
    """A prose figure whose reference names no bench JSON or no value in it."""


@functools.cache
def bench_results(path: Path) -> dict[str, Any]:
    """A bench's JSON, read once however many figures quote it."""
    return read_json(path)


def prose_figure(ref: str, spec: str) -> str:
    """The value at `ref` (a bench name and a JSON pointer into its JSON) formatted by `spec`."""
    name, *pointer = ref.split("/")
    path = results_path(name)
    if not path.is_file():
        raise FigureError(f"figure {ref}: no bench JSON {path.relative_to(ROOT)}")
    value: Any = bench_results(path)
    for raw in pointer:
        key = raw.replace("~1", "/").replace("~0", "~")
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, ValueError):
            raise FigureError(f"figure {ref}: {path.relative_to(ROOT)} has no {key!r} there") from None
    return format(value, spec)


def with_prose_figures(text: str) -> str:
    """`text` with every marked figure rendered from its bench JSON."""
    opening = re.search(r"^[ \t]*<!-- figure ", text, re.MULTILINE)
    if opening:
        line = text.count("\n", 0, opening.start()) + 1
        # Markdown reads a comment that opens a line as a block of its own and ends the paragraph there.
        raise FigureError(f"line {line} opens with a figure; keep a word of the sentence before it on that line")
    return PROSE_FIGURE.sub(lambda m: f"{m['open']}{prose_figure(m['ref'], m['spec'])}<!-- /figure -->", text)


def results_path(name: str) -> Path:
    plain = HERE / f"{name}.json"
    return plain if plain.is_file() else HERE / f"{name}.json.gz"


def render(name: str) -> str:
    results = read_json(results_path(name))
    return f"{RENDERERS[name](results)}\n\n{provenance(results)}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed table is stale")
    args = parser.parse_args()
    stale = []
    TABLES.mkdir(parents=True, exist_ok=True)
    for name in RENDERERS:
        page = TABLES / f"{name}.md"
        text = render(name)
        if args.check:
            if not page.is_file() or page.read_text() != text:
                stale.append(str(page.relative_to(ROOT)))
        else:
            page.write_text(text)
    for path in PROSE:
        text = path.read_text()
        try:
            rendered = with_prose_figures(with_readme_table(text) if path == README else text)
        except FigureError as error:
            print(f"{path.relative_to(ROOT)}: {error}", file=sys.stderr)
            return 1
        if args.check:
            if rendered != text:
                stale.append(str(path.relative_to(ROOT)))
        elif rendered != text:
            path.write_text(rendered)
    for figure in FIGURES:
        source, copy = HERE / figure, TABLES.parent / figure
        if args.check:
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                stale.append(str(copy.relative_to(ROOT)))
        else:
            copy.write_bytes(source.read_bytes())
    if stale:
        print(f"stale results tables or figures (run python bench/results_pages.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(RENDERERS)} tables to {TABLES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
