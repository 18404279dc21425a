"""Token counts as a per-document engine stage (``sdf tokens``): a stored corpus recounted
under another tokenizer, e.g. the target model's, on either engine."""

from __future__ import annotations

import pyarrow as pa

from sdfkit.engine.stage import Stage
from sdfkit.llm.tokens import canonical_name, get_tokenizer


class TokenCountStage(Stage):
    """Per-document stage: token counts under a named tokenizer (table ``token_counts_<name>``).

    Ingest counts tokens inline for its own tokenizer; this stage recounts a stored corpus
    under another one (e.g. the target model's) on either engine.
    """

    name = "token_counts"
    columns = ("doc_id", "text")

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tokenizer = canonical_name(tokenizer)

    @property
    def table(self) -> str:
        return "token_counts_" + "".join(c if c.isalnum() else "_" for c in self.tokenizer)

    @property
    def output_schema(self) -> pa.Schema:
        return pa.schema([("doc_id", pa.string()), ("n_tokens", pa.int64())])

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = batch.column("text").to_pylist()
        counts = get_tokenizer(self.tokenizer).count_batch(texts, threads=1)
        return pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), pa.array(counts, pa.int64())], schema=self.output_schema
        )
