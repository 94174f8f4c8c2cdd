"""Reading clips by row id at one dataset version: what a stage's worker does with its batch of a work list."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import lance
import numpy as np
import pyarrow as pa

from store.lance_store import Store


class ClipReader:
    """Reads blobs and columns of clips by row id at one dataset version (what a stage's worker uses).

    One open dataset per (uri, version) and process: opening a Lance dataset reads its manifest, which
    is worth doing once per worker, not once per batch."""

    _open: dict[tuple[str, int], lance.LanceDataset] = {}  # noqa: RUF012  (a per-process cache)

    def __init__(self, ds: lance.LanceDataset):
        self.ds = ds

    @classmethod
    def of(cls, ds: lance.LanceDataset) -> ClipReader:
        """A reader of the dataset as it is."""
        return cls(ds)

    @classmethod
    def at(cls, store_root: str | Path, version: int) -> ClipReader:
        """A reader of the clips table at `version`, its dataset kept open for the process."""
        uri = Store(store_root).clips_uri
        key = (uri, int(version))
        if key not in cls._open:
            cls._open.clear()  # a new version replaces the old one: one open dataset per process
            cls._open[key] = lance.dataset(uri, version=int(version))
        return cls(cls._open[key])

    def blobs(self, row_ids: Sequence[int] | np.ndarray, column: str = "video") -> list[bytes]:
        """The bytes of each row's blob, in the order of `row_ids` (b"" for a missing value)."""
        if not len(row_ids):
            return []
        ids = [int(r) for r in row_ids]
        found = cast(dict[int, bytes | None], dict(self.ds.read_blobs(column, ids=ids, preserve_order=True)))
        if len(found) == len(ids):
            return [b or b"" for b in found.values()]
        # read_blobs keys its answer by row address; map ids to addresses to restore the order
        addresses = self.ds._take_rows(ids, columns=[], with_row_address=True)["_rowaddr"].to_pylist()
        return [found.get(a) or b"" for a in addresses]

    def columns(self, row_ids: Sequence[int] | np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Scalar columns of the rows, in the order of `row_ids`."""
        return self.ds._take_rows([int(r) for r in row_ids], columns=list(columns))
