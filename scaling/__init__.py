"""Compound scaling of a baseline into a B0-B7 family, and export of the family."""
