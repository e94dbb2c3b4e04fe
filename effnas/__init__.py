"""What every effnas command shares (`effnas.cli`) and the `effnas <command>` console script."""
