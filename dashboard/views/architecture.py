"""The architecture of any trial: its stages as a table, a picture and block strings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.views.common import pick_search
from db import Database
from db.trials import get_trial, trial_points
from effnas.records import SearchRow, TrialRole, TrialStatus
from nas.space.flops import format_flops, format_params
from nas.space.spec import spec_from_dict


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Architecture")
    search = pick_search(searches, "arch-search")
    trials = trial_points(db, [search.id])
    if not trials:
        st.info("This search has no trials yet.")
        return
    by_number = {t.number: t for t in trials}
    complete = [t for t in trials if t.role is TrialRole.CANDIDATE and t.status is TrialStatus.COMPLETE]
    best = max(complete, key=lambda t: t.reward).number if complete else trials[0].number
    number = st.number_input("Trial number", min_value=min(by_number), max_value=max(by_number), value=best, step=1)
    trial = by_number.get(int(number))
    if trial is None:
        st.warning(f"Search {search.id} has no trial {number}.")
        return
    spec = spec_from_dict(get_trial(db, trial.id).arch)
    label = "EfficientNet-B0 reference" if trial.role is TrialRole.REFERENCE else f"trial {trial.number}"
    accuracy = f"{trial.accuracy:.4f}" if trial.accuracy is not None else "-"
    st.markdown(f"**{label}** ({trial.status}): proxy accuracy {accuracy}, {format_flops(trial.flops or 0)} FLOPs "
                f"(multiply-accumulates) at {spec.resolution}px, {format_params(trial.params or 0)} params")
    st.dataframe(pd.DataFrame(figures.stage_rows(spec)), width="stretch")
    st.plotly_chart(figures.architecture_figure(spec), width="stretch", key="architecture")
    st.code("\n".join(spec.block_strings()), language=None)
