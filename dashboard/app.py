"""effnas dashboard: `streamlit run dashboard/app.py [-- --db URL]` or `python -m dashboard [--db URL]`.

Reads the database (from --db, else $EFFNAS_DB, else effnas.db) and draws searches, Pareto fronts, progress,
trials, architectures and families. It only reads; a page reruns on its own when the database changes.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import tempfile
import zipfile
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run dashboard/app.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import streamlit as st

from dashboard import figures, queries
from db import DatabaseError, describe_url, open_database, resolve_url
from nas.space.flops import FLOPS_CONVENTION, format_flops, format_params
from nas.space.spec import spec_from_dict

PAGES = ("Searches", "Pareto fronts", "Progress", "Trials", "Architecture", "Families")
PAGE_SLUGS = dict(zip(PAGES, ("searches", "pareto", "progress", "trials", "architecture", "families")))
REFRESH_SECONDS = 5


def database_url() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_url(args.db)


@st.cache_resource(show_spinner=False)
def session_factory(url: str):
    """One engine per database for the whole server; failures are not cached, so a later search is found."""
    return open_database(url, create=False)


def start_hint(url: str) -> str:
    db_arg = "" if url == "sqlite:///effnas.db" else f" --db {url}"
    return (f"No searches in {describe_url(url)} yet. Start one with\n\n"
            f"```\npython -m nas.search --target-flops 400M{db_arg}\n```\n\nThis page shows it as soon as it starts.")


def shown_status(search: queries.SearchRow) -> str:
    """The stored status, except a 'running' search whose process on this machine is gone (killed)."""
    if search.status != "running" or not search.worker:
        return search.status
    host, _, pid = search.worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return search.status
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "interrupted (process gone)"
    except PermissionError:
        pass
    return search.status


def searches_page(factory, searches: list[queries.SearchRow]) -> None:
    st.subheader("Searches")
    st.caption(FLOPS_CONVENTION)
    frame = pd.DataFrame([{
        "id": s.id, "name": s.name, "target FLOPs": format_flops(s.target_flops), "strategy": s.strategy,
        "data set": s.dataset, "status": shown_status(s), "trials": f"{s.trials}/{s.max_trials or '?'}",
        "best reward": s.best_reward, "started": s.started_at, "finished": s.finished_at,
    } for s in searches])
    st.dataframe(frame, hide_index=True, width="stretch")


def pareto_page(factory, searches: list[queries.SearchRow]) -> None:
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
    with factory() as session:
        trials = queries.trial_points(session, chosen)
    per_search = {i: [t for t in trials if t.search_id == i] for i in chosen}
    right.metric("Completed candidates", sum(1 for t in trials if t.role == "candidate" and t.status == "complete"))
    # One view at a time: with thousands of trials, drawing both charts would double what the browser receives.
    cost = st.radio("View", ("flops", "params"), horizontal=True, key="pareto-view",
                    format_func=lambda c: {"flops": "Accuracy vs. FLOPs", "params": "Accuracy vs. params"}[c])
    st.caption(f"{FLOPS_CONVENTION}. Accuracy: proxy validation accuracy. Dashed line: the FLOPs target.")
    series = [figures.pareto_series(i, by_id[i].name, by_id[i].target_flops, per_search[i], cost) for i in chosen]
    st.plotly_chart(figures.pareto_figure(series, cost, show_dominated, colour), width="stretch", key="pareto")
    for s in series:
        st.markdown(f"**{s.name}**: {len(s.points)} completed trials, {len(s.front)} on the front")


def pick_search(searches: list[queries.SearchRow], key: str) -> queries.SearchRow:
    by_id = {s.id: s for s in searches}
    chosen = st.selectbox("Search", list(by_id), format_func=lambda i: f"{i}: {by_id[i].name} ({shown_status(by_id[i])})",
                          key=key)
    return by_id[chosen]


def progress_page(factory, searches: list[queries.SearchRow]) -> None:
    st.subheader("Search progress")
    search = pick_search(searches, "progress-search")
    with factory() as session:
        trials = queries.trial_points(session, [search.id])
    data = figures.progress_data(trials)
    counts = pd.Series([t.status for t in trials if t.role == "candidate"]).value_counts()
    statuses = ("complete", "failed", "rejected", "queued", "running", "interrupted")
    for column, status in zip(st.columns(len(statuses)), statuses):
        column.metric(status, int(counts.get(status, 0)))
    st.plotly_chart(figures.progress_figure(data), width="stretch", key="progress")
    st.caption("Failed and rejected trials are drawn at reward 0 with their own markers.")


def trials_page(factory, searches: list[queries.SearchRow]) -> None:
    st.subheader("Trials")
    search = pick_search(searches, "trials-search")
    with factory() as session:
        rows = queries.trial_table(session, search.id)
    frame = pd.DataFrame(rows, columns=queries.TABLE_COLUMNS)
    left, middle, right = st.columns(3)
    statuses = sorted(frame["status"].unique()) if len(frame) else []
    keep = left.multiselect("Status", statuses, default=statuses)
    text = middle.text_input("Block strings contain", "")
    min_acc = right.slider("Minimum accuracy", 0.0, 1.0, 0.0, 0.01)
    shown = frame[frame["status"].isin(keep)]
    if text:
        shown = shown[shown["block_strings"].str.contains(text, regex=False)]
    if min_acc > 0:
        shown = shown[shown["accuracy"].fillna(-1) >= min_acc]
    st.caption(f"{len(shown)} of {len(frame)} trials. {FLOPS_CONVENTION}. Click a column header to sort.")
    st.dataframe(shown, hide_index=True, width="stretch")
    st.download_button("Download CSV", shown.to_csv(index=False).encode(), file_name=f"search-{search.id}-trials.csv",
                       mime="text/csv")


def architecture_page(factory, searches: list[queries.SearchRow]) -> None:
    st.subheader("Architecture")
    search = pick_search(searches, "arch-search")
    with factory() as session:
        trials = queries.trial_points(session, [search.id])
    if not trials:
        st.info("This search has no trials yet.")
        return
    by_number = {t.number: t for t in trials}
    complete = [t for t in trials if t.role == "candidate" and t.status == "complete"]
    best = max(complete, key=lambda t: t.reward).number if complete else trials[0].number
    number = st.number_input("Trial number", min_value=min(by_number), max_value=max(by_number), value=best, step=1)
    trial = by_number.get(int(number))
    if trial is None:
        st.warning(f"Search {search.id} has no trial {number}.")
        return
    with factory() as session:
        spec = spec_from_dict(queries.trial_arch(session, trial.id))
    label = "EfficientNet-B0 reference" if trial.role == "reference" else f"trial {trial.number}"
    accuracy = f"{trial.accuracy:.4f}" if trial.accuracy is not None else "-"
    st.markdown(f"**{label}** ({trial.status}): accuracy {accuracy}, {format_flops(trial.flops or 0)} FLOPs at "
                f"{spec.resolution}px, {format_params(trial.params or 0)} params")
    st.dataframe(pd.DataFrame(figures.stage_rows(spec)), width="stretch")
    st.plotly_chart(figures.architecture_figure(spec), width="stretch", key="architecture")
    st.code("\n".join(spec.block_strings()), language=None)


def family_zip(summary: dict, formats: tuple[str, ...]) -> bytes:
    from scaling.export import export_family

    with tempfile.TemporaryDirectory() as folder:
        paths = export_family(summary, Path(folder), formats)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, arcname=f"family-{summary['family_id']}/{path.name}")
    return buffer.getvalue()


def families_page(factory, searches: list[queries.SearchRow]) -> None:
    st.subheader("Families")
    with factory() as session:
        families = queries.list_families(session)
    if not families:
        st.info("No family yet. Grow one from a search with `python -m scaling.grow --search ID`.")
        return
    by_id = {f.id: f for f in families}
    chosen = st.selectbox("Family", list(by_id), format_func=lambda i: f"{i}: {by_id[i].name} ({by_id[i].source})")
    family = by_id[chosen]
    with factory() as session:
        members = queries.family_members(session, family.id)
        trials = queries.trial_points(session, [family.search_id]) if family.search_id else []
    st.caption(f"Baseline: {family.baseline_ref}. Coefficients: {family.source}. {FLOPS_CONVENTION}.")
    table = pd.DataFrame([{
        "name": m["name"], "phi": m["phi"], "width": round(m["width"], 3), "depth": round(m["depth"], 3),
        "resolution": m["resolution"], "params": format_params(m["params"]), "FLOPs": format_flops(m["flops"]),
        "FLOPs/B0": round(m["flops_ratio"], 2), "2^phi": 2 ** m["phi"], "proxy accuracy": m["accuracy"],
    } for m in members])
    st.dataframe(table, hide_index=True, width="stretch")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.family_scaling_figure(members), width="stretch", key="family-scaling")
    with right:
        search_name = next((s.name for s in searches if s.id == family.search_id), "")
        front = (figures.pareto_series(family.search_id, search_name, None, trials, "flops")
                 if family.search_id else None)
        if any(m["accuracy"] is not None for m in members) or front is not None:
            st.plotly_chart(figures.family_accuracy_figure(members, front), width="stretch", key="family-accuracy")
        else:
            st.info("No proxy accuracy for these members: grow with `--evaluate` to measure it.")
    formats = st.multiselect("Export formats", ["json", "onnx", "torchscript"], default=["json"])
    key = f"zip-{family.id}-{','.join(formats)}"
    if st.button("Prepare download", disabled=not formats):
        from scaling.export import load_family_summary

        with st.spinner("Exporting the family ..."), factory() as session:
            st.session_state[key] = family_zip(load_family_summary(session, family.id), tuple(formats))
    if key in st.session_state:
        st.download_button("Download family (zip)", st.session_state[key], file_name=f"family-{family.id}.zip",
                           mime="application/zip")


PAGE_FUNCTIONS = {
    "Searches": searches_page, "Pareto fronts": pareto_page, "Progress": progress_page, "Trials": trials_page,
    "Architecture": architecture_page, "Families": families_page,
}


def watch(url: str, factory, seen: tuple | None) -> None:
    """Rerun the whole page when the database changes (a trial ends, a search starts), and only then, so charts
    keep their zoom while nothing new arrives. Without a usable database yet, wait for one to appear."""
    if factory is None:
        try:
            session_factory(url)
        except DatabaseError:
            return
        st.rerun()
    with factory() as session:
        now = queries.change_signature(session)
    if now != seen:
        st.rerun()


def main() -> None:
    st.set_page_config(page_title="effnas", layout="wide")
    st.title("effnas")
    url = database_url()
    live = st.sidebar.toggle("Refresh when the database changes", value=True)
    refresh = st.fragment(watch, run_every=REFRESH_SECONDS if live else None)
    try:
        factory = session_factory(url)
    except DatabaseError as exc:
        message = str(exc)
        if "does not exist" in message or "is empty" in message:
            st.info(start_hint(url))
        else:
            st.error(f"Cannot read the database: {message}")
        refresh(url, None, None)
        return
    # ?page=pareto opens a page directly, so a page can be linked to.
    slugs = list(PAGE_SLUGS.values())
    if "page" not in st.session_state:
        requested = st.query_params.get("page")
        st.session_state["page"] = PAGES[slugs.index(requested)] if requested in slugs else PAGES[0]
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.query_params["page"] = PAGE_SLUGS[page]
    st.sidebar.caption(f"Database: {describe_url(url)}")
    with factory() as session:
        seen = queries.change_signature(session)
        searches = queries.list_searches(session)
    if not searches and page != "Families":
        st.info(start_hint(url))
    else:
        PAGE_FUNCTIONS[page](factory, searches)
    refresh(url, factory, seen)

main()
