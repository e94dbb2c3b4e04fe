"""From spec to outcome, with no database: the reward's configuration (`config`), proxy training on the one
engine (`proxy`), the reward (`reward`), the evaluator (`evaluator`), Pareto fronts and hypervolume (`pareto`) and
training-free scores (`zero_cost`). Task data lives in `nas.training.data`."""
