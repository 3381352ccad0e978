"""Built-in method plugins, one file each. Registered through the `bench.methods` entry points in pyproject.toml."""
