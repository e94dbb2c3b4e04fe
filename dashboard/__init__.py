"""Streamlit dashboard: reads the database and draws searches, Pareto fronts and families."""
