"""Reading and verifying an export directory (see ``sdfkit.export.shards`` for the format).

``read_export`` streams the examples in training order (from any example on, hashing only
the shards it reads), ``to_datum`` turns one into a ``tinker.types.Datum``, and ``verify``
re-reads every shard against the manifest and the tokenizer and lists every problem found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sdfkit.errors import SdfError
from sdfkit.export.shards import (
    FORMAT_VERSION,
    MANIFEST,
    SHARD_SCHEMA,
    SOURCES,
    StratumCounts,
    eos_token_id,
    file_sha256,
)
from sdfkit.llm.tokens import get_tokenizer


class VerifyError(SdfError, ValueError):
    """An export directory failed verification; the message lists every problem found."""


# ------------------------------------------------------------------ reading


def read_manifest(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    if not d.is_dir():
        raise VerifyError(f"{d}: no such directory")
    path = d / MANIFEST
    if not path.is_file():
        raise VerifyError(
            f"{d}: no {MANIFEST}: not a finished export (an interrupted export never gets one)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VerifyError(f"{path}: not valid JSON ({exc})") from None
    for key in ("version", "tokenizer", "shards", "counts", "max_seq_len"):
        if key not in manifest:
            raise VerifyError(f"{path}: missing key {key!r}")
    if manifest["version"] != FORMAT_VERSION:
        raise VerifyError(f"{path}: format version {manifest['version']} (expected 1)")
    return manifest


def read_export(
    directory: str | Path, check_hashes: bool = True, start: int = 0
) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The manifest and an iterator over the examples in training order, from example
    ``start`` (0-based) on.

    Each example is a dict: ``tokens`` (int32 array), ``weights`` (float32 array), ``doc_id``,
    ``source``, ``concept``, ``doc_type``, ``epoch``, ``piece``, ``example_id``. With
    ``check_hashes`` the sha256 of every shard to be read is checked against the manifest
    first. Shards wholly before ``start`` are skipped by the manifest's per-shard ``rows``:
    they are neither read nor hashed, so resuming late in a large export costs no more than
    resuming early.
    """
    d = Path(directory)
    manifest = read_manifest(d)
    shards = manifest["shards"]
    if start < 0:
        raise VerifyError(f"{d}: start {start} is negative")
    first, skip = _seek(d, shards, start)
    for k, s in enumerate(shards):
        p = d / s["file"]
        if not p.is_file():
            raise VerifyError(f"{p}: listed in the manifest but missing")
        if check_hashes and k >= first and file_sha256(p) != s["sha256"]:
            raise VerifyError(f"{p}: sha256 differs from the manifest (file changed or corrupt)")

    def examples() -> Iterator[dict[str, Any]]:
        for k in range(first, len(shards)):
            s = shards[k]
            table = _read_shard(d / s["file"])
            if "rows" in s and table.num_rows != s["rows"]:
                raise VerifyError(
                    f"{d / s['file']}: {table.num_rows} rows but the manifest says {s['rows']}"
                )
            if k == first and skip:
                table = table.slice(skip)  # _flat handles the offset
            toks, wts, offsets = _flat(table)
            meta = {n: table.column(n).to_pylist() for n in SHARD_SCHEMA.names[2:]}
            for i in range(table.num_rows):
                a, b = offsets[i], offsets[i + 1]
                ex = {"tokens": toks[a:b], "weights": wts[a:b]}
                ex.update({n: meta[n][i] for n in meta})
                yield ex

    return manifest, examples()


def _seek(d: Path, shards: list[dict[str, Any]], start: int) -> tuple[int, int]:
    """(index of the shard holding example ``start``, rows to skip inside it), from the
    manifest's ``rows``; ``(len(shards), 0)`` when ``start`` is the number of examples."""
    if start == 0:
        return 0, 0
    left = start
    for k, s in enumerate(shards):
        rows = s.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise VerifyError(
                f"{d / MANIFEST}: shard {s.get('file')!r} has no row count ('rows'), "
                "needed to start past the first example"
            )
        if left < rows:
            return k, left
        left -= rows
    if left == 0:
        return len(shards), 0
    raise VerifyError(f"{d}: start {start} is beyond the export's {start - left} examples")


def _read_shard(path: Path) -> pa.Table:
    """One shard, every column (the one place shards are decoded for reading)."""
    return pq.read_table(path)


def _flat(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat token ids, flat weights and row offsets of a shard (one chunk)."""
    tcol = table.column("tokens").combine_chunks()
    wcol = table.column("weights").combine_chunks()
    if isinstance(tcol, pa.ChunkedArray):  # pragma: no cover - older pyarrow
        tcol, wcol = tcol.chunk(0), wcol.chunk(0)
    offsets = tcol.offsets.to_numpy()
    if not np.array_equal(offsets, wcol.offsets.to_numpy()):
        raise VerifyError("tokens and weights have different lengths")
    start = offsets[0]
    return (
        tcol.values.to_numpy()[start:] if start else tcol.values.to_numpy(),
        wcol.values.to_numpy()[start:] if start else wcol.values.to_numpy(),
        offsets - start,
    )


def to_datum(example: dict[str, Any]) -> Any:
    """A ``tinker.types.Datum`` for one example: input tokens[:-1], targets tokens[1:],
    weights[1:] (weights[i] is the weight of predicting tokens[i])."""
    from tinker import types

    tokens = np.asarray(example["tokens"], dtype=np.int64)
    weights = np.asarray(example["weights"], dtype=np.float32)
    if len(tokens) < 2 or len(weights) != len(tokens):
        raise VerifyError(
            f"example {example.get('example_id')!r}: needs >= 2 tokens and one weight per token"
        )
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1].tolist()),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.ascontiguousarray(tokens[1:])),
            "weights": types.TensorData.from_numpy(np.ascontiguousarray(weights[1:])),
        },
    )


# ------------------------------------------------------------------ verify


@dataclass
class VerifyReport:
    directory: Path
    manifest: dict[str, Any]
    examples: int
    tokens: int
    datums: int
    counts: list[dict[str, Any]]

    def text(self) -> str:
        m = self.manifest
        lines = [
            f"{self.directory}: ok: {len(m['shards'])} shards, {self.examples:,} examples, "
            f"{self.tokens:,} tokens; hashes, counts, weights and token ranges ({m['tokenizer']}) "
            f"checked; {self.datums:,} tinker Datums built",
            "",
        ]
        # Per stratum over all epochs (the manifest keeps each epoch apart).
        agg: dict[tuple[str, str, str], list[int]] = {}
        for c in self.counts:
            k = (c["source"], c["concept"] or "-", c["doc_type"] or "-")
            r = agg.setdefault(k, [0, 0, 0, 0, 0])
            r[0] = max(r[0], c["documents"])
            r[1] += c["examples"]
            r[2] += c["tokens"]
            r[3] += c["loss_tokens"]
            r[4] += 1
        total = sum(r[2] for r in agg.values()) or 1
        head = [
            "source",
            "concept",
            "doc_type",
            "epochs",
            "docs/epoch",
            "examples",
            "tokens",
            "loss tokens",
            "% tokens",
        ]
        rows = [
            [
                *k,
                str(r[4]),
                f"{r[0]:,}",
                f"{r[1]:,}",
                f"{r[2]:,}",
                f"{r[3]:,}",
                f"{100 * r[2] / total:.1f}",
            ]
            for k, r in sorted(agg.items(), key=lambda kv: (SOURCES.index(kv[0][0]), kv[0]))
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

        def fmt(r: list[str]) -> str:
            return "  ".join(
                v.ljust(w) if i < 3 else v.rjust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()

        lines += [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
        return "\n".join(lines)


class _WeightRule:
    """The weights an export's switches give each example, recomputed from the manifest and
    the example's own tokens: weight 0 on the first token, on the DOCTAG and (when masked) on
    the eval prompt an SDF example starts with, 1 on every other SDF and webtext token. A chat
    trajectory's weights come from its rendering (not kept), so they are only checked to be 0
    or 1. Re-weighted DOCTAG or prompt tokens are caught even when the totals were kept."""

    def __init__(self, tok: Any, manifest: dict[str, Any], problems: list[str]):
        config = manifest.get("config") or {}
        self.doctag = np.asarray(manifest.get("doctag_tokens") or [], dtype=np.int64)
        if config.get("doctag") and tok.encode(config["doctag"]) != self.doctag.tolist():
            problems.append(
                f"doctag_tokens {self.doctag.tolist()} are not {tok.name}'s tokens of the "
                f"doctag {config['doctag']!r}"
            )
        self.prompt_weight = 0.0 if config.get("mask_eval_prompts", True) else 1.0
        self.prompts: dict[int, list[np.ndarray]] = {}  # by first token
        self.checks_prompts = config.get("eval_prompts", "none") != "none"
        if self.checks_prompts:
            texts = manifest.get("eval_prompt_texts")
            if not texts:
                problems.append(
                    "the manifest lists no eval_prompt_texts (an export by an older sdfkit?), "
                    "so the eval-prompt weights cannot be checked; re-export"
                )
                self.checks_prompts = False
            else:
                for text in texts:
                    ids = np.asarray(tok.encode(text), dtype=np.int64)
                    self.prompts.setdefault(int(ids[0]), []).append(ids)

    def problems(
        self,
        where: str,
        toks: np.ndarray,
        wts: np.ndarray,
        offsets: np.ndarray,
        sources: list[str],
        example_ids: list[str],
    ) -> list[str]:
        expected = np.ones(len(wts), dtype=np.float32)
        unprefixed: list[int] = []
        off = offsets.tolist()
        tag = len(self.doctag)
        for i, src in enumerate(sources):
            a, b = off[i], off[i + 1]
            if src == "chat":
                expected[a:b] = wts[a:b]
                continue
            if src != "sdf" or not (tag or self.checks_prompts):
                continue
            t = toks[a:b]
            if tag and not np.array_equal(t[:tag], self.doctag):
                unprefixed.append(i)
                continue
            expected[a : a + tag] = 0.0
            if self.checks_prompts:
                fits = [
                    p
                    for p in self.prompts.get(int(t[tag]) if b - a > tag else -1, [])
                    if np.array_equal(t[tag : tag + len(p)], p)
                ]
                if not fits:
                    unprefixed.append(i)
                    continue
                # prompts that are prefixes of others: the one the weights agree with
                fits.sort(key=lambda p: -len(p))
                span = next(
                    (
                        p
                        for p in fits
                        if np.all(wts[a + tag : a + tag + len(p)] == self.prompt_weight)
                        and (tag + len(p) >= b - a or wts[a + tag + len(p)] == 1)
                    ),
                    fits[0],
                )
                expected[a + tag : a + tag + len(span)] = self.prompt_weight
        if len(offsets) > 1:
            expected[offsets[:-1][np.diff(offsets) > 0]] = 0.0
        out = []
        chat = np.zeros(len(wts), dtype=bool)
        for i, src in enumerate(sources):
            if src == "chat":
                chat[off[i] : off[i + 1]] = True
        if np.any(chat & (wts != 0) & (wts != 1)):
            out.append(f"{where}: chat weights other than 0 and 1")
        wrong = np.nonzero(wts != expected)[0]
        if len(wrong):
            rows = np.unique(np.searchsorted(offsets, wrong, side="right") - 1)
            first = int(rows[0])
            out.append(
                f"{where}: {len(rows)} examples have weights other than the manifest's switches "
                f"give (DOCTAG and masked eval prompts 0, the rest 1), first "
                f"{example_ids[first]!r} at token {int(wrong[0] - offsets[first])}"
            )
        if unprefixed:
            what = " and ".join(
                x for x, on in (("the DOCTAG", tag), ("an eval prompt", self.checks_prompts)) if on
            )
            out.append(
                f"{where}: {len(unprefixed)} sdf examples do not start with {what}, first "
                f"{example_ids[unprefixed[0]]!r}"
            )
        return out


def _eos_problems(tok: Any, eos_id: Any, eos_token: str | None) -> list[str]:
    """An EOS id that is no special token (an ordinary word's id passed for one), or not
    the one the manifest's switches give."""
    if not isinstance(eos_id, int) or not 0 <= eos_id < tok.n_vocab:
        return [f"eos_id {eos_id!r} is not a token id of {tok.name}"]
    out = []
    if eos_id not in tok.special_ids:
        out.append(
            f"eos_id {eos_id} ({tok.decode([eos_id])!r}) is not a special token of {tok.name}"
        )
    try:
        expected = eos_token_id(tok, eos_token)
    except SdfError as exc:
        return [*out, f"the manifest's {exc}"]
    if eos_id != expected:
        out.append(f"eos_id {eos_id} differs from the {expected} its switches give")
    return out


def verify(
    directory: str | Path,
    build_datums: bool = True,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Re-read an export and check it against its manifest and tokenizer; build every
    example's tinker Datum. Raises ``VerifyError`` listing every problem."""
    d = Path(directory)
    manifest = read_manifest(d)
    problems: list[str] = []
    listed = {s["file"] for s in manifest["shards"]}
    for p in sorted(d.iterdir()):
        if p.name != MANIFEST and p.name not in listed:
            problems.append(f"{p.name}: not vouched for by the manifest")
    try:
        tok = get_tokenizer(manifest["tokenizer"])
    except SdfError as exc:
        raise VerifyError(f"{d}: cannot load tokenizer {manifest['tokenizer']!r}: {exc}") from None
    if manifest.get("vocab_hash") != tok.vocab_hash:
        problems.append(
            f"tokenizer {tok.name}: vocabulary hash differs from the manifest's (another "
            "version of the tokenizer?)"
        )
    n_vocab, max_len = tok.n_vocab, int(manifest["max_seq_len"])
    eos_id = manifest.get("eos_id")
    config = manifest.get("config") or {}
    if eos_id is not None:
        problems += _eos_problems(tok, eos_id, config.get("eos_token"))
    rule = _WeightRule(tok, manifest, problems)
    counts = StratumCounts()
    examples = tokens = datums = 0
    ids: set[str] = set()
    last_piece: dict[tuple[str, str, int], tuple[int, int]] = {}  # text -> (piece, last id)
    if build_datums:
        import tinker  # noqa: F401  (the SDK's types; no server is contacted)

    for s in manifest["shards"]:
        p = d / s["file"]
        if not p.is_file():
            problems.append(f"{s['file']}: listed in the manifest but missing")
            continue
        if file_sha256(p) != s["sha256"]:
            problems.append(f"{s['file']}: sha256 differs from the manifest")
            continue
        try:
            table = pq.read_table(p)
        except Exception as exc:
            problems.append(f"{s['file']}: unreadable Parquet ({exc})")
            continue
        missing = [n for n in SHARD_SCHEMA.names if n not in table.column_names]
        if missing:
            problems.append(f"{s['file']}: missing columns {', '.join(missing)}")
            continue
        toks, wts, offsets = _flat(table)
        lengths = np.diff(offsets)
        n = table.num_rows
        where = s["file"]
        if n != s["rows"] or int(offsets[-1]) != s["tokens"]:
            problems.append(
                f"{where}: {n} rows / {int(offsets[-1])} tokens, manifest says "
                f"{s['rows']} / {s['tokens']}"
            )
        if len(toks) and (int(toks.min()) < 0 or int(toks.max()) >= n_vocab):
            problems.append(f"{where}: token ids outside [0, {n_vocab}) of {tok.name}")
        if n and int(lengths.min()) < 2:
            problems.append(f"{where}: an example has fewer than 2 tokens")
        if n and int(lengths.max()) > max_len:
            problems.append(f"{where}: an example exceeds max_seq_len {max_len}")
        if not np.all(np.isfinite(wts)) or (len(wts) and (wts.min() < 0 or wts.max() > 1)):
            problems.append(f"{where}: weights outside [0, 1]")
        if n and np.any(wts[offsets[:-1][lengths > 0]] != 0):
            problems.append(f"{where}: an example's first weight is not 0")
        meta = {k: table.column(k).to_pylist() for k in SHARD_SCHEMA.names[2:]}
        problems += rule.problems(where, toks, wts, offsets, meta["source"], meta["example_id"])
        seg_loss = np.add.reduceat(wts.astype(np.float64), offsets[:-1]) if n else []
        for i in range(n):
            src = meta["source"][i]
            if src not in SOURCES:
                problems.append(f"{where}: row {i}: unknown source {src!r}")
                continue
            key = (meta["concept"][i], meta["doc_type"][i], src, meta["epoch"][i])
            counts.add(key, meta["doc_id"][i], int(lengths[i]), float(seg_loss[i]))
            if meta["example_id"][i] in ids:
                problems.append(f"{where}: row {i}: example_id repeated")
            ids.add(meta["example_id"][i])
            if src != "chat":
                k = (src, meta["doc_id"][i], meta["epoch"][i])
                piece = meta["piece"][i]
                if piece >= last_piece.get(k, (-1, 0))[0]:
                    last_piece[k] = (piece, int(toks[offsets[i + 1] - 1]))
            if build_datums:
                a, b = offsets[i], offsets[i + 1]
                datum = to_datum({"tokens": toks[a:b], "weights": wts[a:b]})
                if datum.model_input.length != lengths[i] - 1:
                    problems.append(f"{where}: row {i}: Datum input length mismatch")
                datums += 1
        examples += n
        tokens += int(offsets[-1])
        if progress:
            progress(n)
    if eos_id is not None:
        no_eos = sum(1 for _, last in last_piece.values() if last != eos_id)
        if no_eos:
            problems.append(f"{no_eos} documents do not end with EOS id {eos_id}")
    recount = counts.to_list()
    if recount != manifest["counts"]:
        problems.append("per-stratum counts recomputed from the shards differ from the manifest")
    if examples != manifest.get("examples") or tokens != manifest.get("tokens"):
        problems.append(
            f"totals {examples} examples / {tokens} tokens differ from the manifest's "
            f"{manifest.get('examples')} / {manifest.get('tokens')}"
        )
    if problems:
        raise VerifyError(f"{d}: verification failed:\n  " + "\n  ".join(problems))
    return VerifyReport(d, manifest, examples, tokens, datums, recount)
