"""Which architecture to try next, and where each trial is stored: the search's configuration (`config`), the
study around the evaluator (`study`), the NNI adapters (`nni_adapters`, `trial_entry`, `trial_forkserver`), the
progress display (`progress`) and the command (`command`, run as `python -m nas.search`)."""
