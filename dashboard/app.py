"""effnas dashboard: `python -m dashboard [--db URL]` (or `streamlit run dashboard/app.py -- --db URL`).

Reads the database (from --db, else $EFFNAS_DB, else effnas.db) and draws searches, Pareto fronts, progress,
trials, architectures and families, one module of `dashboard.views` per page. It only reads; a page reruns on
its own when the database changes. Streamlit runs this file as a script on every rerun: running it is the page.
"""

from __future__ import annotations

import argparse
import sys

import streamlit as st

from dashboard.views import architecture, families, pareto, progress, searches, training, trials
from db import Database, DatabaseError, db_argument, describe_url, open_database, resolve_url
from db.searches import change_signature, list_searches

PAGES = {
    "Searches": ("searches", searches.render),
    "Pareto fronts": ("pareto", pareto.render),
    "Progress": ("progress", progress.render),
    "Trials": ("trials", trials.render),
    "Architecture": ("architecture", architecture.render),
    "Families": ("families", families.render),
    "Training": ("training", training.render),
}
REFRESH_SECONDS = 5


def database_url() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_url(args.db)


@st.cache_resource(show_spinner=False)
def cached_database(url: str) -> Database:
    """One engine per database for the whole server; failures are not cached, so a later search is found."""
    return open_database(url, create=False)


def start_hint(url: str) -> str:
    return (f"No searches in {describe_url(url)} yet. Start one with\n\n"
            f"```\npython -m nas.search --target-flops 400M{db_argument(url)}\n```\n\n"
            "This page shows it as soon as it starts.")


def watch(url: str, db: Database | None, seen: tuple | None) -> None:
    """Rerun the whole page when the database changes (a trial ends, a search starts), and only then, so charts
    keep their zoom while nothing new arrives. Without a usable database yet, wait for one to appear."""
    if db is None:
        try:
            cached_database(url)
        except DatabaseError:
            return
        st.rerun()
    if change_signature(db) != seen:
        st.rerun()


def main() -> None:
    st.set_page_config(page_title="effnas", layout="wide")
    st.title("effnas")
    url = database_url()
    live = st.sidebar.toggle("Refresh when the database changes", value=True)
    refresh = st.fragment(watch, run_every=REFRESH_SECONDS if live else None)
    try:
        db = cached_database(url)
    except DatabaseError as exc:
        message = str(exc)
        if "does not exist" in message or "is empty" in message:
            st.info(start_hint(url))
        else:
            st.error(f"Cannot read the database: {message}")
        refresh(url, None, None)
        return
    # ?page=pareto opens a page directly, so a page can be linked to.
    slugs = {slug: name for name, (slug, _) in PAGES.items()}
    if "page" not in st.session_state:
        st.session_state["page"] = slugs.get(st.query_params.get("page"), next(iter(PAGES)))
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    slug, render = PAGES[page]
    st.query_params["page"] = slug
    st.sidebar.caption(f"Database: {db.shown_url}")
    seen = change_signature(db)
    known = list_searches(db)
    if not known and page not in ("Families", "Training"):
        st.info(start_hint(url))
    else:
        render(db, known)
    refresh(url, db, seen)


main()
