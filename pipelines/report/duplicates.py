"""The duplicate groups section: duplicates counted in full, the first groups found listed with thumbnails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.report.cards import Card
from pipelines.report.scan import ScanBatch
from store import ROW_ID

DUPLICATE_GROUPS = 12  # groups listed (the default of report.duplicate_groups in pipelines/config.py)
DUPLICATE_MEMBERS = 12  # members shown per group; the group's size is always given


@dataclass
class DuplicateGroup:
    """A clip and the clips that duplicate it."""

    kept: str  # the clip the members duplicate (the one a group keeps)
    members: list[str]  # the first DUPLICATE_MEMBERS found
    size: int  # all members


@dataclass
class Duplicates:
    """The report's duplicates section."""

    ran: bool  # the dedup stage wrote duplicate_of
    count: int  # clips that duplicate another
    group_count: int
    groups: list[DuplicateGroup]  # the first groups found
    thumbnails: dict[str, str]  # clip_id -> data URI, for the clips of the groups listed


class DuplicatesPass:
    """Duplicates counted in full, grouped by the clip they duplicate; the first `limit` groups found
    are kept with at most DUPLICATE_MEMBERS members each (clip_id, row id) and their full sizes. The
    distinct roots are held as one Arrow string array (O(groups), not O(clips))."""

    def __init__(self, limit: int, recorded: bool):
        self.limit = limit
        self.recorded = recorded  # the clips table has duplicate_of
        self.count = 0
        self.roots = pa.array([], pa.string())
        self.groups: dict[str, list[tuple[str, int]]] = {}
        self.sizes: dict[str, int] = {}
        self.shown: list[int] = []  # row ids of the kept clips and members listed

    def projection(self) -> dict[str, str]:
        """The columns this pass reads, as {name: SQL}."""
        return {"clip_id": "clip_id", "duplicate_of": "duplicate_of"} if self.recorded else {}

    def add(self, scan: ScanBatch) -> None:
        """Collect the duplicates of one scanned batch."""
        if not self.recorded:
            return
        batch = scan.columns.filter(pc.is_valid(scan.columns["duplicate_of"]))
        if batch.num_rows == 0:
            return
        self.count += batch.num_rows
        of = batch["duplicate_of"]
        found = pc.unique(of)  # in order of first appearance
        self.roots = pc.unique(pa.concat_arrays([self.roots, found]))
        # a batch's first `limit` distinct roots hold every new one the listing still has room for
        for root in found.slice(0, self.limit).to_pylist() if len(self.groups) < self.limit else ():
            if len(self.groups) < self.limit:
                self.groups.setdefault(root, [])
        if not self.groups:
            return
        hit = pc.is_in(of, value_set=pa.array(list(self.groups), pa.string()))
        members = pa.table({"of": of, "clip_id": batch["clip_id"], "rid": batch[ROW_ID]}).filter(hit)
        for root, size in zip(*pc.value_counts(members["of"]).flatten(), strict=True):
            self.sizes[root.as_py()] = self.sizes.get(root.as_py(), 0) + size.as_py()
            room = DUPLICATE_MEMBERS - len(self.groups[root.as_py()])
            if room > 0:
                mine = members.filter(pc.equal(members["of"], root)).slice(0, room)
                self.groups[root.as_py()] += zip(
                    mine["clip_id"].to_pylist(), mine["rid"].to_pylist(), strict=True
                )

    def sampled(self, ds: lance.LanceDataset | None) -> np.ndarray:
        """Row ids of the clips of the groups listed: the kept clips (looked up by clip_id), then the members."""
        kept = _row_ids(ds, list(self.groups)) if ds is not None else {}
        members = (rid for group in self.groups.values() for _, rid in group)
        self.shown = [*kept.values(), *members]
        return np.asarray(self.shown, np.uint64)

    def section(self, cards: Mapping[int, Card]) -> Duplicates:
        """The section, once `sampled` has looked up the kept clips and `cards` holds every clip shown."""
        thumbnails = {
            cards[rid].clip_id: uri for rid in self.shown if (uri := cards[rid].thumbnail_uri) is not None
        }
        return Duplicates(
            ran=self.recorded,
            count=self.count,
            group_count=len(self.roots),
            groups=[
                DuplicateGroup(root, [cid for cid, _ in members], self.sizes[root])
                for root, members in self.groups.items()
            ],
            thumbnails=thumbnails,
        )


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _row_ids(ds: lance.LanceDataset, clip_ids: Sequence[str]) -> dict[str, int]:
    """Row ids of a few clips named by clip_id: one equality lookup each (the clip_id index answers it)."""
    out: dict[str, int] = {}
    for clip_id in clip_ids:
        found = ds.to_table(
            columns=["clip_id"], filter=f"clip_id = {_quote(clip_id)}", with_row_id=True, limit=1
        )
        if found.num_rows:
            out[clip_id] = int(found[ROW_ID][0].as_py())
    return out
