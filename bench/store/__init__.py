"""The store: everything that persists. Content-addressed cache stages (locks, checksums, code identities), atomic
files, run directories, and the `bench cache` commands. May import: core."""
