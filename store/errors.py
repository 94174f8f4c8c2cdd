"""The store's error, apart from the Lance code that raises it: the CLI catches it on every command,
`--help` included, without importing Lance."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store that cannot be used as asked (other schema version, missing dataset, ...)."""
