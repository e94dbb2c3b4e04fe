"""Architecture search: `nas.space` (what a network is) <- `nas.evaluation` (how good it is) <- `nas.search`
(which to try next, and where each trial is stored)."""
