"""Pareto fronts: proxy accuracy against FLOPs or params, one or several searches overlaid."""

from __future__ import annotations

import streamlit as st

from dashboard import figures
from db import Database
from db.trials import trial_points
from effnas.records import SearchRow, TrialRole, TrialStatus
from nas.space.flops import FLOPS_CONVENTION


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
    cost = st.radio("View", ("flops", "params"), horizontal=True, key="pareto-view",
                    format_func=lambda c: {"flops": "Accuracy vs. FLOPs", "params": "Accuracy vs. params"}[c])
    st.caption(f"{FLOPS_CONVENTION}, at each search's resolution. Accuracy: proxy validation accuracy (a short "
               "training), not a trained test accuracy. Dashed line: the FLOPs target.")
    series = [figures.pareto_series(i, by_id[i].name, by_id[i].target_flops, per_search[i], cost) for i in chosen]
    st.plotly_chart(figures.pareto_figure(series, cost, show_dominated, colour), width="stretch", key="pareto")
    for s in series:
        stopped = ""
        if s.partial:
            how = "scored on the supernet only" if s.partial[0].supernet_scored else "stopped early by successive halving"
            stopped = f", {len(s.partial)} {how} (grey, off the front)"
        st.markdown(f"**{s.name}**: {len(s.points)} trials trained to the full proxy, {len(s.front)} on the front"
                    f"{stopped}")
