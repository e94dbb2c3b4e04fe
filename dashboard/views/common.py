"""What several pages share: picking a search, and the status a search is shown with."""

from __future__ import annotations

import os
import socket

import streamlit as st

from effnas.records import SearchRow, SearchStatus


def shown_status(search: SearchRow) -> str:
    """The stored status, except a running search whose process on this machine is gone (killed)."""
    if search.status is not SearchStatus.RUNNING or not search.worker:
        return str(search.status)
    host, _, pid = search.worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return str(search.status)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "interrupted (process gone)"
    except PermissionError:
        pass
    return str(search.status)


def pick_search(searches: list[SearchRow], key: str) -> SearchRow:
    by_id = {s.id: s for s in searches}
    chosen = st.selectbox("Search", list(by_id), key=key,
                          format_func=lambda i: f"{i}: {by_id[i].name} ({shown_status(by_id[i])})")
    return by_id[chosen]
