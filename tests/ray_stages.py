"""Stages used only by the Ray tests (importable by Ray workers via PYTHONPATH=tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from sdfkit.tokens import TokenCountStage


class DiesOnceStage(TokenCountStage):
    """Token counts, but the worker process dies the first time it sees ``victim``."""

    name = "dies_once"

    def __init__(self, marker: str, victim: str) -> None:
        super().__init__("o200k_harmony")
        self.marker, self.victim = marker, victim

    @property
    def table(self) -> str:
        return "dies_once_counts"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.victim in batch.column("doc_id").to_pylist() and not Path(self.marker).exists():
            Path(self.marker).write_text("died once")
            os._exit(1)  # a worker killed mid-stage, not an exception
        return super().process(batch)
