"""From spec to outcome, with no database: task data (`data`), proxy training (`proxy`), the reward (`reward`),
the configurations that hold every default (`config`), the evaluator (`evaluator`) and Pareto fronts (`pareto`)."""
