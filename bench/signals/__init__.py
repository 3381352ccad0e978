"""Teacher signals computed once and cached: the signal pass (top-k, log-probs, values), its sharding over processes,
the memory-mapped signal entries with their codec, and a teacher served over TRL's get_sequence_logprobs protocol
(the server, `bench serve-teacher`, and the client that fills entries from it). May import: core, store, modeling."""
