"""Progress of one search: reward per trial and the best so far, and how many trials are in each state."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.views.common import pick_search
from db import Database, TrialRole, TrialStatus
from db.searches import SearchRow
from db.trials import trial_points

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
