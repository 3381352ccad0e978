"""Teacher signals computed once and cached: the signal pass (top-k, log-probs, values), its sharding over processes,
and the memory-mapped signal entries with their codec. May import: core, store, modeling."""
