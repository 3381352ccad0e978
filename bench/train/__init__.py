"""The one shared trainer every method runs on: the training loop, data parallelism, resumable states and checkpoints,
metric trackers. May import: core, store, modeling, signals."""
