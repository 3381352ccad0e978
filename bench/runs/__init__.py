"""What a user starts: `bench run` (one run directory), `bench plan` and `bench sweep` (methods × seeds × grids).
May import: core, store, data, modeling, signals, train, scoring, pipeline, evaluators."""
