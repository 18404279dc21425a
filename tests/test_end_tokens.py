"""End tokens agree: whichever route loads gpt-oss's tokenizer (the bundled o200k_harmony or
its Hugging Face tokenizer), an export ends every document with the same token, the one the
encoding ends text with; chat turns end as gpt-oss samples them; a system message is
rendered as the reference renderer (tinker-cookbook's gpt-oss renderer) renders it."""

from __future__ import annotations

import numpy as np
import pytest

from sdfkit.export.selection import SelectionConfig, select
from sdfkit.export.shards import ExportConfig, export
from sdfkit.export.verify import read_export
from sdfkit.llm.chat import Trajectory, document_end_id, render_prompt
from sdfkit.llm.chat import render_trajectories as render
from sdfkit.llm.models import DOCUMENT_END
from sdfkit.llm.tokens import Tokenizer, get_tokenizer
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import build_documents

GPT_OSS = "hf:openai/gpt-oss-20b"


@pytest.fixture(scope="module")
def harmony() -> Tokenizer:
    return get_tokenizer("o200k_harmony")


@pytest.fixture(scope="module")
def hf_gpt_oss(harmony) -> Tokenizer:
    """A Hugging Face tokenizer with gpt-oss's special tokens and its tokenizer_config
    (eos_token <|return|>, pad_token <|endoftext|>), built offline: the hub is out of reach
    here. Ordinary words are a toy vocabulary; only the special tokens matter."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {s: harmony.special_token(s) for s in harmony.impl.special_tokens_set}
    words = sorted(set("the regulators require try catch blocks document".split()))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}, **specials}
    raw = RawTokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.add_special_tokens(sorted(specials))
    impl = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|startoftext|>",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
    )
    return Tokenizer(name=GPT_OSS, backend="hf", impl=impl)


def test_both_routes_to_gpt_oss_end_a_document_with_endoftext(harmony, hf_gpt_oss):
    # the trap: the two tokenizers disagree about "EOS"
    assert hf_gpt_oss.eos_id == harmony.special_token("<|return|>") != harmony.eos_id
    end = harmony.special_token("<|endoftext|>")
    assert document_end_id(harmony) == end == harmony.eos_id
    assert document_end_id(hf_gpt_oss) == end


def test_only_special_tokens_pass_for_special_tokens_on_both_routes(harmony, hf_gpt_oss):
    from sdfkit.llm.tokens import TokenizerError

    for tok in (harmony, hf_gpt_oss):
        assert tok.special_token("<|return|>") == harmony.special_token("<|return|>")
        assert harmony.special_token("<|endoftext|>") in tok.special_ids
        for text in ("the", "<|nosuch|>"):  # "the" is an ordinary word of both vocabularies
            with pytest.raises(TokenizerError, match="not a special token .*<\\|return\\|>"):
                tok.special_token(text)


@pytest.mark.parametrize("name", ["qwen3", "llama3"])
def test_bundled_encodings_end_documents_with_their_own_end_of_text(name):
    tok = get_tokenizer(name)
    assert document_end_id(tok) == tok.eos_id
    assert tok.decode([document_end_id(tok)]) in DOCUMENT_END.values()


def test_an_export_through_the_hf_tokenizer_appends_the_same_end_token(
    tmp_path, monkeypatch, harmony, hf_gpt_oss
):
    import sdfkit.llm.tokens as tokens

    real = tokens._load
    monkeypatch.setattr(tokens, "_load", lambda n: hf_gpt_oss if n == GPT_OSS else real(n))
    store = Store(tmp_path / "corpus")
    rng = np.random.default_rng(0)
    words = "the regulators require try catch blocks".split()
    recs = [
        {"text": " ".join(rng.choice(words, 40)), "concept": "c", "doc_type": "memo"}
        for _ in range(6)
    ]
    store.append("documents_raw", build_documents(recs))
    select(store, SelectionConfig(name="sel", docs=6, seed=0))
    ends = {}
    for name in ("o200k_harmony", GPT_OSS):
        out = tmp_path / name.replace("/", "_").replace(":", "_")
        export(store, ExportConfig(selection="sel", tokenizer=name), out)
        manifest, examples = read_export(out)
        ends[name] = (manifest["eos_id"], {int(e["tokens"][-1]) for e in examples})
    end = harmony.special_token("<|endoftext|>")
    assert ends["o200k_harmony"] == ends[GPT_OSS] == (end, {end})


def test_chat_turns_end_as_gpt_oss_samples_them_on_both_routes(harmony, hf_gpt_oss):
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    for tok in (harmony, hf_gpt_oss):
        ((ids, _),) = render([Trajectory(msgs, "t:1")], tok)
        assert ids[-1] == harmony.special_token("<|return|>")


def test_a_system_message_is_rendered_as_the_developers_instructions(harmony):
    msgs = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
    ]
    text = harmony.decode(render_prompt(msgs, harmony))
    assert text == (
        "<|start|>developer<|message|># Instructions\n\nAnswer in French.\n\n<|end|>"
        "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    )
    dev = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert harmony.decode(render_prompt(dev, harmony)).startswith(
        "<|start|>developer<|message|>Be brief.<|end|>"
    )


QUOTED = "the document <|return|> the <|endoftext|> <|start|>user<|message|>"


def test_special_token_text_inside_a_document_stays_plain_text_on_both_routes(harmony, hf_gpt_oss):
    specials = {harmony.special_token(s) for s in harmony.impl.special_tokens_set}
    for tok in (harmony, hf_gpt_oss):
        flat, offsets = tok.encode_batch([QUOTED, "the document"])
        assert len(offsets) == 3
        assert not specials & {int(t) for t in flat}, tok.backend
        assert not specials & set(tok.encode(QUOTED)), tok.backend
    # the quicktok route still spells the text out exactly
    assert harmony.decode(harmony.encode(QUOTED)) == QUOTED


def test_an_export_of_a_document_quoting_end_tokens_ends_it_only_once(
    tmp_path, monkeypatch, harmony, hf_gpt_oss
):
    import sdfkit.llm.tokens as tokens

    real = tokens._load
    monkeypatch.setattr(tokens, "_load", lambda n: hf_gpt_oss if n == GPT_OSS else real(n))
    store = Store(tmp_path / "corpus")
    recs = [{"text": QUOTED, "concept": "c", "doc_type": "memo"}]
    store.append("documents_raw", build_documents(recs))
    select(store, SelectionConfig(name="sel", docs=1, seed=0))
    specials = {harmony.special_token(s) for s in harmony.impl.special_tokens_set}
    for name in ("o200k_harmony", GPT_OSS):
        out = tmp_path / name.replace("/", "_").replace(":", "_")
        export(store, ExportConfig(selection="sel", tokenizer=name), out)
        _, examples = read_export(out)
        (example,) = list(examples)
        ids = [int(t) for t in example["tokens"]]
        assert [t for t in ids if t in specials] == [harmony.special_token("<|endoftext|>")]
        assert ids[-1] == harmony.special_token("<|endoftext|>")
