"""prefdistill-bench: a benchmark and evaluation harness for preference distillation.

The modules at this level are the shared core and the plugin API (errors, paths, progress, textout, dist, faults,
config, method, registry, method_docs, tensors, head); they import nothing else of bench. The packages follow the
pipeline: store -> data -> modeling -> signals -> train -> scoring -> pipeline -> evaluators -> runs
(docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"
