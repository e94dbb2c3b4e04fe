"""One module per dashboard page; each has `render(db, searches)` and draws into the current Streamlit page."""
