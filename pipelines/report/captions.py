"""The captions section: captioned clips counted in full, a random sample of them beside their thumbnails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from pipelines.report.cards import Card
from pipelines.report.scan import Lowest, ScanBatch, sample_keys

SAMPLE_CAPTIONS = 8  # captions shown (the default of report.captions in pipelines/config.py)
# A computed column of the streamed pass (no clips column starts with "__").
_CAPTIONED = "__captioned"


@dataclass
class Captions:
    """The report's captions section."""

    ran: bool  # the clips table has captions
    info: str  # how many clips are captioned, by which models; empty before the caption stage
    cards: list[Card]  # the random sample


class CaptionsPass:
    """Counts captioned clips and samples some of them over the scan."""

    def __init__(self, sample: int, names: set[str]):
        self.recorded, self.models_recorded = "caption" in names, "caption_model" in names
        self.sample = Lowest(sample)
        self.captioned = 0
        self.models: set[str] = set()

    def projection(self) -> dict[str, str]:
        """The columns this pass reads, as {name: SQL}."""
        wanted = {_CAPTIONED: "caption IS NOT NULL"} if self.recorded else {}
        return wanted | ({"caption_model": "caption_model"} if self.models_recorded else {})

    def add(self, batch: ScanBatch) -> None:
        """Count and sample one scanned batch."""
        if not self.recorded:
            return
        columns, ids = batch.columns, batch.ids
        mask = columns[_CAPTIONED].to_numpy(zero_copy_only=False)
        self.captioned += int(np.count_nonzero(mask))
        self.sample.add(sample_keys(ids[mask], salt=1), ids[mask])
        if self.models_recorded:
            chosen = columns["caption_model"].filter(columns[_CAPTIONED])
            self.models.update(str(m) for m in pc.unique(chosen.drop_null()).to_pylist())

    def section(self, cards: Mapping[int, Card], total: int) -> Captions:
        """The captions section, with the sampled clips' cards."""
        info = ""
        if self.recorded:
            info = f"{self.captioned} of {total} clips captioned" + (
                f" by {', '.join(sorted(self.models))}" if self.models else ""
            )
        return Captions(self.recorded, info, [cards[int(rid)] for rid in self.sample.ids])
