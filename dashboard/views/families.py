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
from db.families import get_family, list_families
from db.trials import trial_points
from effnas.records import Family, SearchRow, TrainingRun
from nas.evaluation.latency import describe_environment
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from scaling.compare import compare_families
from scaling.export import FORMATS, ExportOptions, export_family, load_family
from scaling.family import trained_runs


def family_zip(db: Database, family: Family, runs: dict[str, TrainingRun], formats: tuple[str, ...]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        paths = export_family(db, family, runs, Path(folder) / "family", ExportOptions(formats))
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
    chosen = st.selectbox("Family", list(by_id),
                          format_func=lambda i: f"{i}: {by_id[i].name} ({by_id[i].rule}, {by_id[i].source})")
    family = by_id[chosen]
    members = get_family(db, family.id).members
    trained = trained_runs(db, family.id)
    trials = trial_points(db, [family.search_id]) if family.search_id else []
    st.caption(f"Baseline: {family.baseline_ref}. Rule: {family.rule}; coefficients: {family.source}. "
               f"{FLOPS_CONVENTION}, at each member's resolution.")
    table = pd.DataFrame([{
        "name": m.name, "phi": m.phi, "width": round(m.width, 3), "depth": round(m.depth, 3),
        "resolution": m.resolution, "params": format_params(m.params), "FLOPs": format_flops(m.flops),
        "FLOPs/B0": round(m.flops_ratio, 2), "2^phi": m.ideal_ratio, "proxy accuracy": m.accuracy,
        "test accuracy (exported run)": trained[m.name].test_accuracy if m.name in trained else None,
        "budget (exported run)": trained[m.name].budget if m.name in trained else None,
        "ms, batch 1": m.latency["batch_1_ms"] if m.latency else None,
        "ms, batch 32": m.latency["batch_32_ms"] if m.latency else None,
    } for m in members])
    st.dataframe(table, hide_index=True, width="stretch")
    budgets = {run.budget for run in trained.values()}
    if len(budgets) > 1:
        st.warning(f"The members' exported runs were trained at different budgets ({'; '.join(sorted(budgets))}): "
                   "their test accuracies are not comparable. The comparison below keeps each budget apart.")
    measured = next((m.latency for m in members if m.latency), None)
    if measured:
        st.caption("Latency: measured by scaling.grow at each member's resolution on "
                   f"{describe_environment(measured['measured_on']).replace(', batch 1', '')} (median of timed runs).")
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
    trained_section(db, family.id)
    formats = st.multiselect("Export formats", list(FORMATS), default=["json"])
    key = f"zip-{family.id}-{','.join(formats)}"
    if st.button("Prepare download", disabled=not formats):
        with st.spinner("Exporting the family ..."):
            st.session_state[key] = family_zip(db, *load_family(db, family.id), tuple(formats))
    if key in st.session_state:
        st.download_button("Download family (zip)", st.session_state[key], file_name=f"family-{family.id}.zip",
                           mime="application/zip")


def trained_section(db: Database, family_id: int) -> None:
    """This family's trained members beside every family trained on the same data with the same recipe (seeds
    aside): test accuracy mean +- sd over seeds against FLOPs and params, the Pareto front marked."""
    st.markdown("#### Trained accuracy, compared")
    comparisons = [c for c in compare_families(db) if any(r.family_id == family_id for r in c.rows)]
    if not comparisons:
        st.info(f"No member of this family is trained yet: `python -m scaling.train --family {family_id} --seeds 0,1` "
                "trains them on a data set with a test split.")
        return
    comparison = comparisons[0]
    if len(comparisons) > 1:
        by_key = {c.key: c for c in comparisons}
        comparison = by_key[st.selectbox("Data and recipe", list(by_key), format_func=lambda k: by_key[k].describe(),
                                         key="comparison")]
    st.caption(f"Test accuracy after full training, {comparison.describe()}: every family trained the same way is "
               "drawn, with error bars of one standard deviation over seeds; the dashed line is the Pareto front "
               "across all of them. This is trained accuracy, not the search's proxy accuracy. The same table: "
               "`python -m scaling.compare`."
               + (f" This family was also trained with other budgets or recipes ({len(comparisons) - 1} more): pick one above; "
                  "figures of different budgets are never drawn on one curve." if len(comparisons) > 1 else ""))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.comparison_figure(comparison, "flops", family_id), width="stretch",
                        key="trained-flops")
    with right:
        st.plotly_chart(figures.comparison_figure(comparison, "params", family_id), width="stretch",
                        key="trained-params")
    if any(r.latency_ms is not None for r in comparison.rows):
        by_latency = next(c for c in compare_families(db, cost="latency") if c.key == comparison.key)
        st.plotly_chart(figures.comparison_figure(by_latency, "latency_ms", family_id), width="stretch",
                        key="trained-latency")
    st.dataframe(pd.DataFrame([{
        "family": f"{r.family_id}: {r.family}", "rule": r.rule, "coefficients": r.coefficients, "member": r.member,
        "resolution": r.resolution, "FLOPs": format_flops(r.flops), "params": format_params(r.params),
        "ms, batch 1": r.latency_ms, "seeds": len(r.seeds), "test accuracy (mean)": round(r.mean, 4),
        "sd": round(r.sd, 4) if r.sd is not None else None, "Pareto front": r.on_front,
    } for r in comparison.rows]), hide_index=True, width="stretch", key="comparison-table")
