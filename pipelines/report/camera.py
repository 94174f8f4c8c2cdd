"""The camera motion section: clips per camera_motion label, each with a strip of sampled thumbnails."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from curate.camera import LABELS
from pipelines.report.cards import Card
from pipelines.report.scan import Lowest, ScanBatch, sample_keys

CAMERA_STRIP = 6  # clips shown per camera_motion label
UNMEASURED = "(not measured)"  # the label of clips whose camera could not be measured


@dataclass
class CameraLabel:
    """The report's row of one camera motion label."""

    label: str
    clips: int
    strip: list[Card]  # up to CAMERA_STRIP clips of the label, sampled at random


class CameraPass:
    """Counts camera motion labels and samples clips of each over the scan."""

    def __init__(self, names: set[str]):
        self.recorded = "camera_motion" in names
        self.counts: Counter[str] = Counter()
        self.strips: dict[str, Lowest] = {}

    def projection(self) -> dict[str, str]:
        """The columns this pass reads, as {name: SQL}."""
        return {"camera_motion": "camera_motion"} if self.recorded else {}

    def add(self, batch: ScanBatch) -> None:
        """Count and sample one scanned batch."""
        if not self.recorded:
            return
        ids = batch.ids
        labels = pc.fill_null(batch.columns["camera_motion"], UNMEASURED)
        for entry in pc.value_counts(labels).to_pylist():
            label = str(entry["values"])
            self.counts[label] += int(entry["counts"])
            mask = pc.equal(labels, label).to_numpy(zero_copy_only=False)
            strip = self.strips.setdefault(label, Lowest(CAMERA_STRIP))
            strip.add(sample_keys(ids[mask], salt=2), ids[mask])

    def sampled(self) -> list[np.ndarray]:
        """The row ids of the sampled clips (their cards are read once for every pass)."""
        return [strip.ids for strip in self.strips.values()]

    def section(self, cards: Mapping[int, Card]) -> list[CameraLabel]:
        """Labels in curate.camera.LABELS order, then the unmeasured clips; labels without clips left out."""
        return [
            CameraLabel(label, self.counts[label], [cards[int(r)] for r in self.strips[label].ids])
            for label in (*LABELS, UNMEASURED)
            if self.counts[label]
        ]
