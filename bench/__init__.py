"""prefdistill-bench: a benchmark and evaluation harness for preference distillation."""

__version__ = "0.1.0"
