"""Pareto fronts: proxy accuracy against FLOPs, params or predicted latency, one or several searches overlaid."""

from __future__ import annotations

import streamlit as st

from dashboard import figures
from db import Database
from db.searches import get_search
from db.trials import trial_points
from effnas.records import SearchRow, TrialRole, TrialStatus
from nas.evaluation.latency import LATENCY_ENVIRONMENT, describe_environment
from nas.space.flops import FLOPS_CONVENTION

VIEW_TITLES = {"flops": "Accuracy vs. FLOPs", "params": "Accuracy vs. params",
               "latency_ms": "Accuracy vs. latency"}


def _target(search: SearchRow, cost: str) -> float | None:
    return {"flops": search.target_flops, "latency_ms": search.target_latency_ms}.get(cost)


def _latency_caption(db: Database, chosen: list[int]) -> str:
    """What each latency search's figures were measured on."""
    lines = []
    for search_id in chosen:
        environment = get_search(db, search_id).config.get(LATENCY_ENVIRONMENT)
        if environment:
            lines.append(f"search {search_id}: {describe_environment(environment)}")
    return (" Latency: predicted by the latency table of " + "; ".join(lines)
            + " (hover a point for its measured latency, where the search measured it).") if lines else ""


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Pareto fronts")
    by_id = {s.id: s for s in searches}
    chosen = st.multiselect("Searches", list(by_id), default=[searches[0].id],
                            format_func=lambda i: f"{i}: {by_id[i].name}")
    if not chosen:
        st.info("Pick at least one search.")
        return
    left, middle, right = st.columns(3)
    show_dominated = left.toggle("Show dominated trials", value=True, key="show-dominated")
    colour = middle.radio("Colour by", ("reward", "order", "search"), horizontal=True,
                          format_func=lambda c: {"order": "trial order"}.get(c, c))
    trials = trial_points(db, chosen)
    per_search = {i: [t for t in trials if t.search_id == i] for i in chosen}
    right.metric("Completed candidates",
                 sum(1 for t in trials if t.role is TrialRole.CANDIDATE and t.status is TrialStatus.COMPLETE))
    # One view at a time: with thousands of trials, drawing both charts would double what the browser receives.
    views = ("flops", "params", *(("latency_ms",) if any(t.latency_ms is not None for t in trials) else ()))
    cost = st.radio("View", views, horizontal=True, key="pareto-view", format_func=VIEW_TITLES.get)
    st.caption(f"{FLOPS_CONVENTION}, at each search's resolution. Accuracy: proxy validation accuracy (a short "
               "training), not a trained test accuracy. Dashed line: the search's target."
               + (_latency_caption(db, chosen) if cost == "latency_ms" else ""))
    series = [figures.pareto_series(i, by_id[i].name, _target(by_id[i], cost), per_search[i], cost) for i in chosen]
    st.plotly_chart(figures.pareto_figure(series, cost, show_dominated, colour), width="stretch", key="pareto")
    for s in series:
        stopped = ""
        if s.partial:
            how = "scored on the supernet only" if s.partial[0].supernet_scored else "stopped early by successive halving"
            stopped = f", {len(s.partial)} {how} (grey, off the front)"
        st.markdown(f"**{s.name}**: {len(s.points)} trials trained to the full proxy, {len(s.front)} on the front"
                    f"{stopped}")
