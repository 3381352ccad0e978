"""Teacher signals computed once and cached: the signal pass, its sharding, memory-mapped entries and their codec, a
teacher served over TRL's get_sequence_logprobs protocol and its client. May import: core, store, modeling."""
