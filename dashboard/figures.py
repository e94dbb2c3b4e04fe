"""What each chart shows (plain functions, testable without a browser) and how it is drawn (Plotly)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from effnas.records import IN_FLIGHT, FamilyMember, TrainingRun, TrialPoint, TrialRole, TrialStatus
from nas.evaluation.pareto import hypervolume_curve, pareto_front
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.space.layout import network_layout
from nas.space.spec import ArchSpec
from scaling.compare import Comparison, MemberResult

COST_TITLES = {"flops": "FLOPs (multiply-accumulates, log scale)", "params": "parameters (log scale)",
               "latency_ms": "predicted latency (ms, log scale)"}
STATUS_SYMBOLS = {TrialStatus.COMPLETE: "circle", TrialStatus.FAILED: "x", TrialStatus.REJECTED: "triangle-down",
                  TrialStatus.RUNNING: "hourglass", TrialStatus.INTERRUPTED: "square-open"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class ParetoSeries:
    """One search on a Pareto chart: its candidates trained to the full proxy, which of them form the front, its
    reference, and the candidates successive halving stopped early (drawn apart, never on the front)."""

    search_id: int
    name: str
    # The search's target in the chart's cost (FLOPs or ms), None where the cost is not what it targets.
    target: float | None
    points: list[TrialPoint]
    front: list[int]
    reference: TrialPoint | None
    partial: list[TrialPoint] = field(default_factory=list)


def pareto_series(search_id: int, name: str, target: float | None, trials: list[TrialPoint],
                  cost: str) -> ParetoSeries:
    complete = [t for t in trials
                if t.role is TrialRole.CANDIDATE and t.status is TrialStatus.COMPLETE and getattr(t, cost)]
    points = [t for t in complete if not t.partial]
    front = pareto_front([getattr(p, cost) for p in points], [p.accuracy for p in points])
    reference = next((t for t in trials if t.role is TrialRole.REFERENCE and t.status is TrialStatus.COMPLETE), None)
    return ParetoSeries(search_id, name, target, points, front, reference, [t for t in complete if t.partial])


def _latency_text(point: TrialPoint) -> str:
    if point.latency_ms is None:
        return ""
    measured = "" if point.measured_latency_ms is None else f", measured {point.measured_latency_ms:.3f} ms"
    return f"latency predicted {point.latency_ms:.3f} ms{measured}<br>"


def _hover(points: list[TrialPoint]) -> list[str]:
    return [
        f"trial {p.number}: acc {p.accuracy:.4f}, reward {p.reward:.4f}<br>"
        f"{format_flops(p.flops)} FLOPs, {format_params(p.params)} params<br>{_latency_text(p)}"
        + p.block_strings.replace(" ", "<br>")
        for p in points
    ]


def pareto_figure(series: list[ParetoSeries], cost: str = "flops", show_dominated: bool = True,
                  color_by: str = "reward") -> go.Figure:
    """Accuracy vs. cost: trials as points, each search's non-dominated front as a step line."""
    figure = go.Figure()
    for index, s in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        on_front = set(s.front)
        shown = [p for i, p in enumerate(s.points) if show_dominated or i in on_front]
        if shown:
            marker: dict[str, Any] = {"size": 7, "opacity": 0.75}
            if color_by == "order":
                marker.update(color=[p.number for p in shown], colorscale="Viridis",
                              colorbar={"title": "trial"} if index == 0 else None, showscale=index == 0)
            elif color_by == "reward":
                marker.update(color=[p.reward for p in shown], colorscale="Plasma",
                              colorbar={"title": "reward"} if index == 0 else None, showscale=index == 0)
            else:
                marker.update(color=colour)
            figure.add_trace(go.Scattergl(
                x=[getattr(p, cost) for p in shown], y=[p.accuracy for p in shown], mode="markers",
                name=f"{s.name}: trials", marker=marker, text=_hover(shown), hoverinfo="text",
            ))
        if s.partial and show_dominated:
            figure.add_trace(go.Scattergl(
                x=[getattr(p, cost) for p in s.partial], y=[p.accuracy for p in s.partial], mode="markers",
                name=f"{s.name}: " + ("scored on the supernet, not trained" if s.partial[0].supernet_scored
                                      else "stopped by successive halving (first-epoch accuracy)"),
                marker={"size": 6, "symbol": "circle-open", "color": "grey"}, text=_hover(s.partial), hoverinfo="text",
            ))
        front = [s.points[i] for i in s.front]
        if front:
            figure.add_trace(go.Scatter(
                x=[getattr(p, cost) for p in front], y=[p.accuracy for p in front], mode="lines+markers",
                line={"shape": "hv", "color": colour, "width": 2}, marker={"size": 9, "color": colour},
                name=f"{s.name}: Pareto front", text=_hover(front), hoverinfo="text",
            ))
        if s.reference is not None and getattr(s.reference, cost):
            figure.add_trace(go.Scatter(
                x=[getattr(s.reference, cost)], y=[s.reference.accuracy], mode="markers+text",
                marker={"symbol": "star", "size": 16, "color": colour, "line": {"color": "black", "width": 1}},
                text=["EfficientNet-B0"], textposition="top center", name=f"{s.name}: EfficientNet-B0",
                hovertext=_hover([s.reference]), hoverinfo="text",
            ))
        if s.target:
            label = format_flops(s.target) if cost == "flops" else f"{s.target:g} ms"
            figure.add_vline(x=s.target, line={"dash": "dash", "color": colour}, annotation_text=f"target {label}")
    figure.update_layout(
        xaxis={"title": {"text": COST_TITLES[cost]}, "type": "log"},
        yaxis={"title": {"text": "proxy validation accuracy"}},
        legend={"orientation": "h", "y": -0.2}, margin={"t": 30}, height=560,
    )
    return figure


@dataclass(frozen=True)
class ProgressData:
    numbers: list[int]
    rewards: list[float]
    statuses: list[str]
    best_numbers: list[int]
    best_so_far: list[float]


def progress_data(trials: list[TrialPoint]) -> ProgressData:
    """Reward per candidate trial (0 for failed/rejected) and the best reward so far, in trial order."""
    numbers, rewards, statuses, best_numbers, best = [], [], [], [], []
    current = None
    for t in (t for t in trials if t.role is TrialRole.CANDIDATE and t.status not in IN_FLIGHT):
        value = t.reward if t.status is TrialStatus.COMPLETE else 0.0
        numbers.append(t.number)
        rewards.append(value)
        statuses.append(t.status)
        if t.status is TrialStatus.COMPLETE and (current is None or value > current):
            current = value
        if current is not None:
            best_numbers.append(t.number)
            best.append(current)
    return ProgressData(numbers, rewards, statuses, best_numbers, best)


def progress_figure(data: ProgressData) -> go.Figure:
    figure = go.Figure()
    for status, symbol in STATUS_SYMBOLS.items():
        picked = [i for i, s in enumerate(data.statuses) if s == status]
        if picked:
            figure.add_trace(go.Scatter(
                x=[data.numbers[i] for i in picked], y=[data.rewards[i] for i in picked], mode="markers",
                marker={"symbol": symbol, "size": 8}, name=status,
            ))
    figure.add_trace(go.Scatter(x=data.best_numbers, y=data.best_so_far, mode="lines", line={"shape": "hv"},
                                name="best so far"))
    figure.update_layout(xaxis={"title": {"text": "trial"}}, yaxis={"title": {"text": "reward"}}, height=420,
                         margin={"t": 30})
    return figure


@dataclass(frozen=True)
class HypervolumeSeries:
    """One search's hypervolume after each finished candidate, in trial order."""

    name: str
    numbers: list[int]
    values: list[float]


def hypervolume_series(name: str, trials: list[TrialPoint], max_cost: float, cost: str = "flops") -> HypervolumeSeries:
    """The hypervolume of the (cost, proxy accuracy) front up to each finished candidate, the cost FLOPs or
    predicted latency; failed, rejected and partly trained (successive halving) candidates count as trials that
    add nothing."""
    finished = [t for t in trials if t.role is TrialRole.CANDIDATE and t.status not in IN_FLIGHT]
    accuracies = [t.accuracy if t.status is TrialStatus.COMPLETE and not t.partial else 0.0 for t in finished]
    values = hypervolume_curve([getattr(t, cost) or 0 for t in finished], accuracies, max_cost)
    return HypervolumeSeries(name, [t.number for t in finished], values)


def hypervolume_figure(series: list[HypervolumeSeries]) -> go.Figure:
    figure = go.Figure()
    for index, s in enumerate(series):
        figure.add_trace(go.Scatter(x=s.numbers, y=s.values, mode="lines", line={"shape": "hv",
                                    "color": PALETTE[index % len(PALETTE)]}, name=s.name))
    figure.update_layout(xaxis={"title": {"text": "trial"}}, yaxis={"title": {"text": "hypervolume"}, "range": [0, 1]},
                         height=380, margin={"t": 30}, legend={"orientation": "h", "y": -0.25})
    return figure


def stage_rows(spec: ArchSpec) -> list[dict[str, Any]]:
    """One row per stage: what it is and the feature-map size it works at (from the builder's layout)."""
    layout = network_layout(spec)
    rows = []
    for stage, blocks in zip(spec.stages, layout.stages):
        first = blocks[0]
        rows.append({
            "block": {"mbconv": f"MBConv{stage.expand_ratio}", "dsconv": "DSConv", "conv": "Conv"}[stage.block],
            "kernel": f"{stage.kernel}x{stage.kernel}",
            "expansion": stage.expand_ratio,
            "SE": stage.se_ratio,
            "skip": "identity" if any(b.skip for b in blocks) else "none",
            "channels": f"{first.in_channels}->{first.out_channels}",
            "repeats": len(blocks),
            "stride": stage.stride,
            "resolution": f"{first.in_size}->{blocks[-1].out_size}",
        })
    return rows


def architecture_figure(spec: ArchSpec) -> go.Figure:
    """The network stage by stage: a bar per stage, height its channels, labelled with what it is."""
    rows = stage_rows(spec)
    layout = network_layout(spec)
    labels = ["stem"] + [f"stage {i + 1}" for i in range(len(rows))] + ["head"]
    heights = [layout.stem_channels] + [int(r["channels"].split("->")[1]) for r in rows] + [layout.head_channels]
    texts = [f"conv3x3 s{layout.stem_stride}<br>{layout.stem_size}²"] + [
        f"{r['block']} k{r['kernel'][0]}<br>x{r['repeats']}{' SE' if r['SE'] else ''}<br>{r['resolution'].split('->')[1]}²"
        for r in rows
    ] + [f"conv1x1<br>{layout.head_size}²"]
    figure = go.Figure(go.Bar(x=labels, y=heights, text=texts, textposition="outside", marker={"color": "#4c78a8"}))
    figure.update_layout(yaxis={"title": {"text": "output channels (log)"}, "type": "log"}, height=380,
                         margin={"t": 30}, showlegend=False)
    return figure


def family_scaling_figure(members: list[FamilyMember]) -> go.Figure:
    """FLOPs and params against phi (log y), with the ideal 2^phi growth from B0's FLOPs."""
    phis = [m.phi for m in members]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=phis, y=[m.flops for m in members], mode="lines+markers", name="FLOPs"))
    figure.add_trace(go.Scatter(x=phis, y=[members[0].flops * 2**p for p in phis], mode="lines",
                                line={"dash": "dash"}, name="ideal FLOPs: B0 x 2^phi"))
    figure.add_trace(go.Scatter(x=phis, y=[m.params for m in members], mode="lines+markers", name="params"))
    figure.update_layout(xaxis={"title": {"text": "phi"}}, yaxis={"title": {"text": "count (log)"}, "type": "log"},
                         height=420, margin={"t": 30}, title={"text": FLOPS_CONVENTION, "font": {"size": 12}})
    return figure


def family_accuracy_figure(members: list[FamilyMember], front: ParetoSeries | None) -> go.Figure:
    """Proxy accuracy vs. FLOPs of the members that have it, over the search's Pareto front."""
    figure = pareto_figure([front], "flops", show_dominated=True, color_by="search") if front else go.Figure()
    measured = [m for m in members if m.accuracy is not None]
    figure.add_trace(go.Scatter(
        x=[m.flops for m in measured], y=[m.accuracy for m in measured], mode="lines+markers+text",
        text=[m.name for m in measured], textposition="bottom right", name="family members",
        marker={"symbol": "diamond", "size": 12, "color": "black"},
    ))
    figure.update_layout(xaxis={"title": {"text": COST_TITLES["flops"]}, "type": "log"},
                         yaxis={"title": {"text": "proxy validation accuracy"}})
    return figure


def comparison_figure(comparison: Comparison, cost: str, highlight: int | None = None) -> go.Figure:
    """Trained test accuracy (mean, error bars one sd over seeds) against FLOPs, params or measured latency
    (`latency_ms`, with the comparison's front over latency), one line per family,
    the Pareto front across all of them drawn through its members: EfficientNet's Figure 1 for the user's data."""
    figure = go.Figure()
    families: dict[int, list[MemberResult]] = {}
    for row in comparison.rows:
        families.setdefault(row.family_id, []).append(row)
    for index, (family_id, rows) in enumerate(families.items()):
        rows = sorted(rows, key=lambda r: r.phi)
        figure.add_trace(go.Scatter(
            x=[getattr(r, cost) for r in rows], y=[r.mean for r in rows], mode="lines+markers+text",
            error_y={"type": "data", "array": [r.sd or 0.0 for r in rows], "visible": True},
            text=[r.member for r in rows], textposition="top left", name=f"{family_id}: {rows[0].family} ({rows[0].rule})",
            marker={"size": 12 if family_id == highlight else 9, "color": PALETTE[index % len(PALETTE)]},
            line={"width": 3 if family_id == highlight else 1.5},
            hovertext=[f"family {r.family_id} {r.member}: test acc {r.mean:.4f}"
                       + (f" +- {r.sd:.4f}" if r.sd is not None else "") + f" over {len(r.seeds)} seed(s), "
                       f"{format_flops(r.flops)} FLOPs at {r.resolution}px, {format_params(r.params)} params"
                       for r in rows],
            hoverinfo="text",
        ))
    front = sorted((r for r in comparison.rows if r.on_front), key=lambda r: getattr(r, cost))
    figure.add_trace(go.Scatter(
        x=[getattr(r, cost) for r in front], y=[r.mean for r in front], mode="lines+markers", name="Pareto front",
        line={"color": "black", "dash": "dash", "width": 1},
        marker={"symbol": "star", "size": 14, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 1.5}},
        hoverinfo="skip",
    ))
    axis = {"flops": "FLOPs at each member's resolution (multiply-accumulates of conv and linear layers, log)",
            "latency_ms": "latency at batch 1, measured by scaling.grow (ms, log)"}.get(cost, COST_TITLES[cost])
    figure.update_layout(xaxis={"title": {"text": axis, "font": {"size": 11}}, "type": "log"},
                         yaxis={"title": {"text": "trained test accuracy (mean +- sd over seeds)"}}, height=480,
                         title={"text": f"trained on {comparison.budget}", "font": {"size": 13}},
                         margin={"t": 50}, legend={"orientation": "h", "y": -0.3})
    return figure


def learning_curve_figure(run: TrainingRun) -> go.Figure:
    """Training loss and validation accuracy (raw and EMA weights) per epoch."""
    epochs = [p["epoch"] for p in run.curve]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=epochs, y=[p["val_accuracy"] for p in run.curve], mode="lines+markers",
                                name="validation accuracy (raw weights)"))
    figure.add_trace(go.Scatter(x=epochs, y=[p["val_accuracy_ema"] for p in run.curve], mode="lines+markers",
                                name="validation accuracy (EMA weights)"))
    figure.add_trace(go.Scatter(x=epochs, y=[p["loss"] for p in run.curve], mode="lines+markers",
                                name="training loss", yaxis="y2", line={"dash": "dot"}))
    figure.update_layout(
        xaxis={"title": {"text": "epoch"}, "range": [0.5, max(run.recipe.get("epochs", 1), len(epochs)) + 0.5],
               "tickmode": "linear", "tick0": 1, "dtick": max(1, math.ceil(run.recipe.get("epochs", 1) / 15))},
        yaxis={"title": {"text": "validation accuracy"}},
        yaxis2={"title": {"text": "training loss (label-smoothed)"}, "overlaying": "y", "side": "right"},
        height=420, margin={"t": 30}, legend={"orientation": "h"},
    )
    return figure
