"""Training runs: learning curves (live while a run trains), and each run's trained test accuracy and weights."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import figures
from db import Database
from db.training import list_runs
from effnas.records import SearchRow
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Training runs")
    runs = list_runs(db)
    if not runs:
        st.info("No training run yet. Train the found network with `python -m scaling.train --search ID`, or a "
                "family's members with `python -m scaling.train --family ID`.")
        return
    st.caption(f"Accuracy here is trained accuracy: validation accuracy per epoch, and test accuracy measured once "
               f"at the end with the weights the validation split chose. {FLOPS_CONVENTION}, at the training "
               "resolution.")
    st.dataframe(pd.DataFrame([{
        "run": r.id, "network": r.label, "data set": r.dataset, "status": str(r.status),
        "epochs": f"{r.epochs_done}/{r.recipe.get('epochs', '?')}", "resolution": r.resolution,
        "FLOPs": format_flops(r.flops), "params": format_params(r.params), "test accuracy": r.test_accuracy,
        "validation accuracy": r.val_accuracy, "weights": r.chosen_weights, "device": r.device,
    } for r in reversed(runs)]), hide_index=True, width="stretch")
    by_id = {r.id: r for r in runs}
    chosen = st.selectbox("Run", list(reversed(by_id)), key="training-run",
                          format_func=lambda i: f"{i}: {by_id[i].label} ({by_id[i].status})")
    run = by_id[chosen]
    if not run.curve:
        st.info(f"Run {run.id} has not finished its first epoch yet; its curve appears here when it does.")
    else:
        st.plotly_chart(figures.learning_curve_figure(run), width="stretch", key="learning-curve")
    left, right = st.columns(2)
    left.markdown("**Recipe**")
    left.dataframe(pd.DataFrame([{"setting": name, "value": str(value)} for name, value in run.recipe.items()]),
                   hide_index=True, width="stretch", key="recipe-table")
    if run.weights_path:
        right.markdown(f"**Weights** ({run.chosen_weights}, epoch {run.best_epoch}): `{run.weights_path}`, "
                       f"SHA-256 `{run.weights_sha256[:16]}...`")
    if run.error:
        right.warning(run.error)
