"""Progress of one search: reward per trial and the best so far, how many trials are in each state, and the
hypervolume of the front against trials, beside other searches' for comparison."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.views.common import pick_search
from db import Database
from db.searches import get_search
from db.trials import trial_points
from effnas.records import SearchRow, TrialRole, TrialStatus
from nas.evaluation.config import RewardConfig
from nas.space.flops import FLOPS_CONVENTION
from nas.training.config import default

SHOWN_STATUSES = (TrialStatus.COMPLETE, TrialStatus.FAILED, TrialStatus.REJECTED, TrialStatus.QUEUED,
                  TrialStatus.RUNNING, TrialStatus.INTERRUPTED)


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Search progress")
    search = pick_search(searches, "progress-search")
    trials = trial_points(db, [search.id])
    data = figures.progress_data(trials)
    counts = pd.Series([str(t.status) for t in trials if t.role is TrialRole.CANDIDATE]).value_counts()
    for column, status in zip(st.columns(len(SHOWN_STATUSES)), SHOWN_STATUSES):
        column.metric(str(status), int(counts.get(str(status), 0)))
    st.plotly_chart(figures.progress_figure(data), width="stretch", key="progress")
    st.caption("Reward: proxy accuracy x (FLOPs/target)^w. Failed and rejected trials are drawn at reward 0 with "
               "their own markers.")
    st.markdown("**Hypervolume of the (FLOPs, proxy accuracy) front**")
    names = {s.id: f"{s.id}: {s.name} ({s.strategy})" for s in searches}
    compared = st.multiselect("Searches", list(names), default=[search.id], format_func=names.get,
                              key="hypervolume-searches")
    series = []
    for search_id in compared:
        info = get_search(db, search_id)
        ratio = info.config.get("max_flops_ratio", default(RewardConfig, "max_flops_ratio"))
        series.append(figures.hypervolume_series(names[search_id], trial_points(db, [search_id]),
                                                 ratio * info.target,
                                                 "flops" if info.objective == "flops" else "latency_ms"))
    st.plotly_chart(figures.hypervolume_figure(series), width="stretch", key="hypervolume")
    st.caption("The share of the box FLOPs in [0, max ratio x target] x proxy accuracy in [0, 1] that a search's "
               "front dominates (pymoo's indicator, reference point: max ratio x target FLOPs, accuracy 0; the max "
               f"ratio is each search's --max-flops-ratio). Compare searches of one task. {FLOPS_CONVENTION}, at "
               "each search's resolution. A latency search's box is its predicted latency in ms instead.")
