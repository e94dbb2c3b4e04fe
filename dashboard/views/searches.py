"""Searches: every search with its status, trials and best reward."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.views.common import shown_status
from db import Database
from effnas.records import SearchRow
from nas.space.flops import FLOPS_CONVENTION, format_flops


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Searches")
    st.caption(f"{FLOPS_CONVENTION}. Best reward: proxy accuracy x (FLOPs/target)^w.")
    frame = pd.DataFrame([{
        "id": s.id, "name": s.name, "target": format_flops(s.target_flops) + " FLOPs" if s.target_latency_ms is None
        else f"{s.target_latency_ms:g} ms latency", "strategy": s.strategy,
        "data set": s.dataset, "status": shown_status(s), "trials": f"{s.trials}/{s.max_trials or '?'}",
        "best reward": s.best_reward, "started": s.started_at, "finished": s.finished_at,
    } for s in searches])
    st.dataframe(frame, hide_index=True, width="stretch")
