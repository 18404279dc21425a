"""Stages used only by the Ray tests (importable by Ray workers via PYTHONPATH=tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from sdfkit.engine.token_counts import TokenCountStage


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


class DiesAtPublishStage(TokenCountStage):
    """Token counts, but the worker process dies once while storing the part that holds
    ``victim``: before its rename (``when="before"``: a finished temporary file is left
    behind) or just after it (``when="after"``: the part is already published and the retried
    task stores the same batch again).

    Its ``setup`` (run in the worker) wraps ``sdfkit.store.catalog.publish`` (the store's rename of a
    finished part) in that process."""

    name = "dies_at_publish"

    def __init__(self, marker: str, victim: str, when: str) -> None:
        super().__init__("o200k_harmony")
        self.marker, self.victim, self.when = marker, victim, when

    @property
    def table(self) -> str:
        return f"dies_{self.when}_publish_counts"

    def setup(self) -> None:
        super().setup()
        from sdfkit.store import catalog as store

        real = getattr(store, "_real_publish", store.publish)
        store._real_publish = real
        marker, victim, when = Path(self.marker), self.victim, self.when

        def publish_or_die(tmp: Path, final: Path) -> None:
            import pyarrow.parquet as pq

            if marker.exists():  # fired already: this worker publishes normally from now on
                store.publish = real
                real(tmp, final)
                return
            fire = victim in pq.read_table(tmp, columns=["doc_id"]).column("doc_id").to_pylist()
            if fire and when == "before":
                marker.write_text(tmp.name)
                os._exit(1)
            real(tmp, final)
            if fire:
                marker.write_text(final.name)
                os._exit(1)

        store.publish = publish_or_die


class DiesAtPublishInActorStage(DiesAtPublishStage):
    """The same, run as a model-loading stage: Ray restarts the actor and retries its task."""

    name = "dies_at_publish_in_actor"
    loads_model = True
