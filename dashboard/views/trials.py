"""Trials of one search: a sortable, filterable table with a CSV download."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.views.common import pick_search
from db import Database
from db.trials import trial_columns
from effnas.records import SearchRow
from nas.space.flops import FLOPS_CONVENTION

COLUMNS = (
    "id", "number", "role", "status", "accuracy", "reward", "epochs", "partial", "supernet_accuracy", "supernet_reward",
    "flops", "params", "zero_cost_score",
    "train_seconds", "eval_seconds", "attempts", "started_at", "finished_at", "block_strings", "error",
)
SHOWN_NAMES = {"accuracy": "proxy accuracy", "zero_cost_score": "zero-cost score", "epochs": "proxy epochs",
               "partial": "not fully trained", "supernet_accuracy": "supernet accuracy",
               "supernet_reward": "supernet reward"}


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Trials")
    search = pick_search(searches, "trials-search")
    frame = pd.DataFrame(trial_columns(db, search.id, COLUMNS), columns=COLUMNS)
    # What the accuracy column measures: a supernet path never trained on its own, a candidate stopped by
    # successive halving, or the full proxy training.
    frame.insert(4, "scored by", ["supernet" if partial and epochs == 0 else "halving, stopped" if partial else "proxy"
                                  for partial, epochs in zip(frame["partial"], frame["epochs"])])
    frame = frame.rename(columns=SHOWN_NAMES)
    left, middle, right = st.columns(3)
    statuses = sorted(frame["status"].unique()) if len(frame) else []
    keep = left.multiselect("Status", statuses, default=statuses)
    text = middle.text_input("Block strings contain", "")
    min_acc = right.slider("Minimum proxy accuracy", 0.0, 1.0, 0.0, 0.01)
    shown = frame[frame["status"].isin(keep)]
    if text:
        shown = shown[shown["block_strings"].str.contains(text, regex=False)]
    if min_acc > 0:
        shown = shown[shown["proxy accuracy"].fillna(-1) >= min_acc]
    st.caption(f"{len(shown)} of {len(frame)} trials. {FLOPS_CONVENTION}. Click a column header to sort.")
    st.dataframe(shown, hide_index=True, width="stretch")
    st.download_button("Download CSV", shown.to_csv(index=False).encode(), file_name=f"search-{search.id}-trials.csv",
                       mime="text/csv")
