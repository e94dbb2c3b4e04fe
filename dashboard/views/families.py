"""Families: the B0..B7 table, FLOPs and params against phi, proxy accuracy over the search's front, and a zip
download of the exported family."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import figures
from db import Database
from db.families import Family, get_family, list_families
from db.searches import SearchRow
from db.training import TrainingRun, list_runs
from db.trials import trial_points
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from scaling.export import FORMATS, export_family, load_family
from scaling.family import latest_trained_runs


def family_zip(family: Family, runs: dict[str, TrainingRun], formats: tuple[str, ...]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        paths = export_family(family, runs, Path(folder), formats)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, arcname=f"family-{family.id}/{path.name}")
    return buffer.getvalue()


def render(db: Database, searches: list[SearchRow]) -> None:
    st.subheader("Families")
    families = list_families(db)
    if not families:
        st.info("No family yet. Grow one from a search with `python -m scaling.grow --search ID`.")
        return
    by_id = {f.id: f for f in families}
    chosen = st.selectbox("Family", list(by_id), format_func=lambda i: f"{i}: {by_id[i].name} ({by_id[i].source})")
    family = by_id[chosen]
    members = get_family(db, family.id).members
    trained = latest_trained_runs(db, family.id)
    trials = trial_points(db, [family.search_id]) if family.search_id else []
    st.caption(f"Baseline: {family.baseline_ref}. Coefficients: {family.source}. {FLOPS_CONVENTION}, at each "
               "member's resolution.")
    table = pd.DataFrame([{
        "name": m.name, "phi": m.phi, "width": round(m.width, 3), "depth": round(m.depth, 3),
        "resolution": m.resolution, "params": format_params(m.params), "FLOPs": format_flops(m.flops),
        "FLOPs/B0": round(m.flops_ratio, 2), "2^phi": m.ideal_ratio, "proxy accuracy": m.accuracy,
        "test accuracy (trained)": trained[m.name].test_accuracy if m.name in trained else None,
    } for m in members])
    st.dataframe(table, hide_index=True, width="stretch")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.family_scaling_figure(members), width="stretch", key="family-scaling")
    with right:
        search_name = next((s.name for s in searches if s.id == family.search_id), "")
        front = (figures.pareto_series(family.search_id, search_name, None, trials, "flops")
                 if family.search_id else None)
        if any(m.accuracy is not None for m in members) or front is not None:
            st.plotly_chart(figures.family_accuracy_figure(members, front), width="stretch", key="family-accuracy")
        else:
            st.info("No proxy accuracy for these members: grow with `--evaluate` to measure it.")
    trained_section(db, family.id, {f.id: f"{f.id}: {f.name}" for f in families})
    formats = st.multiselect("Export formats", list(FORMATS), default=["json"])
    key = f"zip-{family.id}-{','.join(formats)}"
    if st.button("Prepare download", disabled=not formats):
        with st.spinner("Exporting the family ..."):
            st.session_state[key] = family_zip(*load_family(db, family.id), tuple(formats))
    if key in st.session_state:
        st.download_button("Download family (zip)", st.session_state[key], file_name=f"family-{family.id}.zip",
                           mime="application/zip")


def trained_section(db: Database, family_id: int, family_names: dict[int, str]) -> None:
    """Trained test accuracy of the members against FLOPs and params, beside every other family trained on the
    same data with the same recipe: EfficientNet's Figure 1 for this data."""
    st.markdown("#### Trained accuracy")
    own = [r for r in list_runs(db, family_id=family_id) if r.test_accuracy is not None]
    if not own:
        st.info(f"No member of this family is trained yet: `python -m scaling.train --family {family_id}` trains "
                "them on a data set with a test split.")
        return
    latest = own[-1]
    comparable = [r for r in list_runs(db, dataset=latest.dataset) if r.recipe_key == latest.recipe_key]
    series = figures.trained_series(comparable, family_names)
    st.caption(f"Test accuracy after full training on {latest.dataset} with one recipe ({latest.recipe['epochs']} "
               f"epochs); other families and networks trained the same way are drawn beside it. This is trained "
               "accuracy, not the search's proxy accuracy.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.trained_accuracy_figure(series, "flops"), width="stretch", key="trained-flops")
    with right:
        st.plotly_chart(figures.trained_accuracy_figure(series, "params"), width="stretch", key="trained-params")
