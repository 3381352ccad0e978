"""The stage graph of one run configuration: data, tokenizer, SFT and DPO teachers, teacher signals, rollouts,
checkpoint selection and stage costs. May import: core, store, data, modeling, signals, train, scoring."""
