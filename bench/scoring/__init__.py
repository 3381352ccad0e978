"""Scorers: the embedded checker's verified score and likelihood reward accuracy, reward models (protocol, loading,
the cached embedded RM) and what scorers and evaluators share. May import: core, store, data, modeling."""
