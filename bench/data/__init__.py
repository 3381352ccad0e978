"""Datasets as DatasetBundles: the embedded suite (data/suite), hub adapters, local files, splits and their checks.
May import: core."""
