"""The `localet` command line: a thin adapter over :mod:`localet_core`."""
