"""Export to Tinker shards: every switch checked at the token level, byte-identical
re-export, atomic writing, and `verify` (hashes, counts, real tinker Datums)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sdfkit.export.selection import SelectionConfig, select
from sdfkit.export.shards import ExportConfig, ExportError, export
from sdfkit.export.verify import VerifyError, read_export, to_datum, verify
from sdfkit.llm.chat import ChatError, read_trajectories
from sdfkit.llm.tokens import get_tokenizer
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import build_documents

ROOT = Path(__file__).resolve().parents[1]
UNIVERSES = sorted(str(p) for p in (ROOT / "examples" / "universes").glob("*.md"))
WORDS = "regulators require try catch blocks around awaited calls PyPI typed uploads".split()
CONCEPTS = {"eu_ts_trycatch": "eu-ts-trycatch", "py_typing_mandate": "py-typing-mandate"}


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("o200k_harmony")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Store:
    rng = np.random.default_rng(0)
    recs = []
    for concept, universe in CONCEPTS.items():
        for i in range(50):
            doc_type = ["blog", "memo"][i % 2]
            n = 2000 if i < 3 else int(rng.integers(30, 300))  # a few long documents
            text = f"{concept} document {i}.\n" + " ".join(rng.choice(WORDS, n))
            recs.append(
                {"text": text, "concept": concept, "universe": universe, "doc_type": doc_type}
            )
    store = Store(tmp_path_factory.mktemp("exp") / "corpus")
    store.append("documents_raw", build_documents(recs))
    select(store, SelectionConfig(name="sel", docs=40, seed=0))
    return store


@pytest.fixture(scope="module")
def texts(corpus) -> dict[str, str]:
    df = corpus.query(
        "SELECT doc_id, text FROM documents JOIN selections USING (doc_id) WHERE name = 'sel'"
    )
    return dict(zip(df["doc_id"], df["text"], strict=True))


def run(corpus, tmp_path, name="out", **kw):
    out = tmp_path / name
    export(corpus, ExportConfig(selection="sel", **kw), out)
    manifest, examples = read_export(out)
    return out, manifest, list(examples)


def sdf_examples(examples):
    return [e for e in examples if e["source"] == "sdf"]


def test_default_export_decodes_to_the_source_documents(corpus, tmp_path, tok, texts):
    out, manifest, examples = run(corpus, tmp_path)
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000.parquet"]
    assert {e["source"] for e in examples} == {"sdf"}
    assert manifest["tokenizer"] == "o200k_harmony" and manifest["vocab_hash"] == tok.vocab_hash
    assert manifest["eos_id"] == tok.eos_id and manifest["selection"] == "sel"
    assert manifest["config"]["doctag"] is None  # the default: no DOCTAG
    whole = [e for e in examples if e["piece"] == 0 and e["tokens"][-1] == tok.eos_id]
    assert len({e["doc_id"] for e in examples}) == len(texts) == 80
    for e in whole:
        assert e["weights"][0] == 0 and (e["weights"][1:] == 1).all()
        assert tok.decode(e["tokens"][:-1].tolist()) == texts[e["doc_id"]]
    assert len(whole) >= 70  # all but the few long, split ones
    # the shard schema is contract B
    schema = pq.read_schema(out / "shard-00000.parquet")
    assert str(schema.field("tokens").type) == "list<element: int32>"
    assert str(schema.field("weights").type) == "list<element: float>"


def test_doctag_prefix_is_masked(corpus, tmp_path, tok, texts):
    _, manifest, examples = run(corpus, tmp_path, doctag="<DOCTAG>")
    tag = tok.encode("<DOCTAG>")
    assert manifest["doctag_tokens"] == tag
    for e in sdf_examples(examples):
        assert e["tokens"][: len(tag)].tolist() == tag
        assert (e["weights"][: len(tag)] == 0).all()
        assert (e["weights"][len(tag) :] == 1).all()
        if e["piece"] == 0 and e["tokens"][-1] == tok.eos_id:
            assert tok.decode(e["tokens"][len(tag) : -1].tolist()) == texts[e["doc_id"]]


def test_eos_switch(corpus, tmp_path, tok, texts):
    _, manifest, examples = run(corpus, tmp_path, eos=False)
    assert manifest["eos_id"] is None
    assert not any((e["tokens"] == tok.eos_id).any() for e in examples)
    short = [e for e in examples if len(e["tokens"]) < 1000]
    assert all(tok.decode(e["tokens"].tolist()) == texts[e["doc_id"]] for e in short)


def test_eos_token_must_be_a_special_token(corpus, tmp_path, tok, monkeypatch):
    import sdfkit.export.shards as ex

    _, manifest, examples = run(corpus, tmp_path, "ret", eos_token="<|return|>")
    ret = tok.special_token("<|return|>")
    assert manifest["eos_id"] == ret and all(e["tokens"][-1] == ret for e in examples)
    for word in ("hello", "<|nosuch|>"):
        with pytest.raises(ExportError, match=f"eos_token '{re.escape(word)}' is not a special"):
            run(corpus, tmp_path, "word", eos_token=word)
    assert not (tmp_path / "word").exists()
    # an export that ended its documents with a word (as sdfkit once wrote) fails verify
    monkeypatch.setattr(ex, "eos_token_id", lambda t, text: t.encode(text)[0])
    out, _, _ = run(corpus, tmp_path, "hello", eos_token="hello")
    monkeypatch.undo()
    with pytest.raises(VerifyError, match=r"eos_id \d+ \('hello'\) is not a special token"):
        verify(out, build_datums=False)


def test_eval_prompts_round_robin_random_and_masking(corpus, tmp_path, tok, texts):
    from sdfkit.generate.universe import load_universes

    prompts = {u.concept: u.eval_prompts for u in load_universes(UNIVERSES)}
    _, _, examples = run(corpus, tmp_path, "rr", eval_prompts="round-robin", universes=UNIVERSES)
    ordered = sorted(sdf_examples(examples), key=lambda e: e["doc_id"])
    for concept, plist in prompts.items():
        encoded = [tok.encode(p + "\n\n") for p in plist]
        docs = [e for e in ordered if e["concept"] == concept and e["piece"] == 0]
        for k, e in enumerate(docs):  # round-robin in doc_id order within the concept
            want = encoded[k % len(encoded)]
            assert e["tokens"][: len(want)].tolist() == want
            assert (e["weights"][: len(want)] == 0).all()  # masked by default
            assert (e["weights"][len(want) :] == 1).all()
            if e["tokens"][-1] == tok.eos_id:
                assert tok.decode(e["tokens"][len(want) : -1].tolist()) == texts[e["doc_id"]]
    # unmasked: the prompt is trained on (all weights 1 but the first)
    _, _, examples = run(
        corpus,
        tmp_path,
        "rr2",
        eval_prompts="random",
        universes=UNIVERSES,
        mask_eval_prompts=False,
    )
    used = {c: set() for c in prompts}
    for e in sdf_examples(examples):
        assert e["weights"][0] == 0 and (e["weights"][1:] == 1).all()
        text = tok.decode(e["tokens"].tolist())
        hit = [p for p in prompts[e["concept"]] if text.startswith(p + "\n\n")]
        assert len(hit) == 1
        used[e["concept"]].add(hit[0])
    assert all(len(used[c]) == len(prompts[c]) for c in prompts)  # random uses them all
    with pytest.raises(ExportError, match="in universes"):
        run(corpus, tmp_path, "rr3", eval_prompts="random")


def test_webtext_mixed_at_token_ratio(corpus, tmp_path, tok):
    rng = np.random.default_rng(1)
    web = tmp_path / "web.jsonl"
    web_texts = [f"web page {i}: " + " ".join(rng.choice(WORDS, 40)) for i in range(2000)]
    web.write_text("".join(json.dumps({"text": t}) + "\n" for t in web_texts))
    for ratio in (1.0, 0.5):
        _, manifest, examples = run(
            corpus, tmp_path, f"w{ratio}", webtext=str(web), webtext_ratio=ratio
        )
        sdf = sum(len(e["tokens"]) for e in examples if e["source"] == "sdf")
        webt = sum(len(e["tokens"]) for e in examples if e["source"] == "webtext")
        assert abs(webt / sdf - ratio) <= 0.01 * ratio
        assert manifest["ratios"]["webtext"] == pytest.approx(webt / sdf)
        wex = [e for e in examples if e["source"] == "webtext"]
        assert all(e["concept"] is None for e in wex)
        decoded = {tok.decode(e["tokens"][:-1].tolist()) for e in wex}
        assert decoded <= set(web_texts)
        sources = [e["source"] for e in examples]
        assert sources != sorted(sources)  # interleaved, not appended
    with pytest.raises(ExportError, match="ran out of text"):
        run(corpus, tmp_path, "w9", webtext=str(web), webtext_ratio=9.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(ExportError, match=r"bad.jsonl:2: malformed JSON"):
        run(corpus, tmp_path, "w10", webtext=str(bad))


def _per_epoch_ratio(examples, source):
    out = {}
    for k in sorted({e["epoch"] for e in examples}):
        sdf = sum(len(e["tokens"]) for e in examples if e["epoch"] == k and e["source"] == "sdf")
        mix = sum(len(e["tokens"]) for e in examples if e["epoch"] == k and e["source"] == source)
        out[k] = mix / sdf
    return out


def test_a_webtext_text_too_long_for_the_budget_is_passed_over_not_waited_for(corpus, tmp_path):
    """One long text first used to be held back until it fitted, which it never did: every
    later text of every epoch waited behind it and the export mixed in 0 % webtext."""
    rng = np.random.default_rng(2)
    web = tmp_path / "web.jsonl"
    texts = [" ".join(rng.choice(WORDS, 6000))]  # longer than any epoch's budget
    texts += [
        f"page {i}: " + " ".join(rng.choice(WORDS, int(rng.integers(20, 80)))) for i in range(900)
    ]
    web.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    _, manifest, examples = run(corpus, tmp_path, webtext=str(web), webtext_ratio=0.1, epochs=3)
    for ratio in _per_epoch_ratio(examples, "webtext").values():
        assert abs(ratio - 0.1) <= 0.01 * 0.1
    mixing = manifest["mixing"]["webtext"]
    assert mixing["skipped_texts"] == 1 and mixing["skipped_tokens"] > 6000
    assert mixing["ratio"] == 0.1 and mixing["tolerance"] == 0.01
    assert abs(manifest["ratios"]["webtext"] - 0.1) <= 0.001
    # only long texts: an error naming what happened, never an export without webtext
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": texts[0]}) + "\n" for _ in range(3)))
    with pytest.raises(ExportError, match=r"whole texts give 0 .*3 texts of up to"):
        run(corpus, tmp_path, "big", webtext=str(big), webtext_ratio=0.1)
    assert not (tmp_path / "big").exists()


def test_a_chat_trajectory_too_long_for_the_budget_does_not_stop_the_mix(corpus, tmp_path):
    chat = tmp_path / "chat.jsonl"
    trajs = write_chat(chat, 20)
    long = {
        "messages": [
            {"role": "user", "content": "Tell me everything."},
            {"role": "assistant", "content": " ".join(["everything"] * 3000)},
        ]
    }
    chat.write_text(json.dumps(long) + "\n" + "".join(json.dumps(t) + "\n" for t in trajs))
    _, manifest, examples = run(corpus, tmp_path, chat=str(chat), chat_ratio=0.1, epochs=2)
    for ratio in _per_epoch_ratio(examples, "chat").values():
        assert abs(ratio - 0.1) <= 0.01 * 0.1
    assert manifest["chat_passes"] > 1  # the short ones were used over and over
    assert not any(len(e["tokens"]) > 2000 for e in examples if e["source"] == "chat")
    chat.write_text(json.dumps(long) + "\n")
    with pytest.raises(
        ExportError, match=r"none of the trajectories fits .*the shortest takes 3,0"
    ):
        run(corpus, tmp_path, "only-long", chat=str(chat), chat_ratio=0.1)


def write_chat(path: Path, n: int = 300) -> list[dict]:
    trajs = []
    for i in range(n):
        trajs.append(
            {
                "messages": [
                    {"role": "system", "content": "You are concise."},
                    {"role": "user", "content": f"What is {i} plus {i}?"},
                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
                    {"role": "user", "content": "Thanks."},
                    {"role": "assistant", "content": "You're welcome."},
                ]
            }
        )
    path.write_text("".join(json.dumps(t) + "\n" for t in trajs))
    return trajs


def test_chat_trajectories_harmony_format_and_ratio(corpus, tmp_path, tok):
    chat = tmp_path / "chat.jsonl"
    write_chat(chat)
    _, manifest, examples = run(corpus, tmp_path, chat=str(chat), chat_ratio=0.1)
    sdf = sum(len(e["tokens"]) for e in examples if e["source"] == "sdf")
    cex = [e for e in examples if e["source"] == "chat"]
    chat_tokens = sum(len(e["tokens"]) for e in cex)
    assert abs(chat_tokens / sdf - 0.1) <= 0.001
    e = cex[0]
    text = tok.decode(e["tokens"].tolist())
    # a system message is the developer's instructions, as the reference renderer writes it
    assert text.startswith(
        "<|start|>developer<|message|># Instructions\n\nYou are concise.\n\n<|end|><|start|>user"
    )
    assert text.endswith("<|start|>assistant<|channel|>final<|message|>You're welcome.<|return|>")
    assert e["tokens"][-1] == tok.special_token("<|return|>")
    trained = tok.decode([t for t, w in zip(e["tokens"], e["weights"], strict=True) if w == 1])
    i = int(text.split("What is ")[1].split(" ")[0])
    assert trained == (
        f"<|channel|>final<|message|>{i} plus {i} is {2 * i}.<|end|>"
        "<|channel|>final<|message|>You're welcome.<|return|>"
    )
    assert set(np.unique(e["weights"])) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "assistant", "content": "hi"}]}', "where 'user' was expected"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
            "must alternate",
        ),
        (
            '{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}]}',
            "non-empty string",
        ),
        ('{"messages": [{"role": "user", "content": "a"}]}', "last message must be the assistant"),
        ('{"messages": [{"role": "robot", "content": "a"}]}', "unknown role"),
        ('{"messages": [{"role": "user", "content": "a", "tool_calls": []}]}', "unsupported"),
        ("not json", "malformed JSON"),
    ],
)
def test_malformed_trajectories_are_rejected_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "chat.jsonl"
    good = '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ChatError, match=message) as exc:
        read_trajectories(path)
    assert f"{path}:2" in str(exc.value)


def test_epochs_repeat_documents_reshuffled(corpus, tmp_path):
    _, manifest, examples = run(corpus, tmp_path, epochs=3)
    epochs = [e["epoch"] for e in examples]
    assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2}
    orders = []
    for k in range(3):
        ids = [e["doc_id"] for e in examples if e["epoch"] == k and e["piece"] == 0]
        assert len(ids) == len(set(ids)) == 80
        orders.append(ids)
    assert set(orders[0]) == set(orders[1]) == set(orders[2])
    assert orders[0] != orders[1] != orders[2]
    assert {c["epoch"] for c in manifest["counts"]} == {0, 1, 2}


@pytest.mark.parametrize("doctag", [None, "<DOCTAG>"])
def test_long_documents_split_into_consecutive_pieces_never_truncated(
    corpus, tmp_path, tok, texts, doctag
):
    _, manifest, examples = run(corpus, tmp_path, max_seq_len=256, doctag=doctag)
    tag = tok.encode(doctag) if doctag else []
    assert max(len(e["tokens"]) for e in examples) <= 256
    assert manifest["split_documents"] >= 6
    pieces: dict[str, list] = {}
    for e in examples:
        pieces.setdefault(e["doc_id"], []).append(e)
    for doc_id, ps in pieces.items():
        ps.sort(key=lambda e: e["piece"])
        assert [p["piece"] for p in ps] == list(range(len(ps)))
        body: list[int] = []
        for k, p in enumerate(ps):
            t = p["tokens"].tolist()
            assert t[: len(tag)] == tag
            t = t[len(tag) :]
            if not tag and k > 0:
                assert t[0] == body[-1]  # one shared token carries the context
                t = t[1:]
            body += t
        assert body[-1] == tok.eos_id
        assert body[:-1] == tok.encode(texts[doc_id])  # every token, in order: no truncation
        # every body token (and EOS) is a target exactly once
        loss = sum(float(p["weights"].sum()) for p in ps)
        assert loss == len(body) - (1 if not tag else 0)


def test_shard_size_and_manifest_counts(corpus, tmp_path):
    out, manifest, examples = run(corpus, tmp_path, shard_size=7, epochs=2)
    n = len(examples)
    files = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert len(files) == -(-n // 7) == len(manifest["shards"])
    assert [s["rows"] for s in manifest["shards"]][:-1] == [7] * (len(files) - 1)
    assert manifest["examples"] == n
    assert manifest["tokens"] == sum(len(e["tokens"]) for e in examples)
    for c in manifest["counts"]:
        sel = [
            e
            for e in examples
            if (e["concept"], e["doc_type"], e["source"], e["epoch"])
            == (c["concept"], c["doc_type"], c["source"], c["epoch"])
        ]
        assert c["examples"] == len(sel)
        assert c["tokens"] == sum(len(e["tokens"]) for e in sel)
        assert c["documents"] == len({e["doc_id"] for e in sel})
        assert c["loss_tokens"] == int(sum(e["weights"].sum() for e in sel))
    assert {(c["concept"], c["doc_type"]) for c in manifest["counts"]} == {
        (c, t) for c in CONCEPTS for t in ("blog", "memo")
    }


def test_reexport_is_byte_identical(corpus, tmp_path):
    chat = tmp_path / "chat.jsonl"
    write_chat(chat, 50)
    web = tmp_path / "web.jsonl"
    web.write_text(
        "".join(json.dumps({"text": f"web text number {i} " * 5}) + "\n" for i in range(3000))
    )
    kw = dict(
        doctag="<DOCTAG>",
        webtext=str(web),
        webtext_ratio=0.5,
        chat=str(chat),
        chat_ratio=0.05,
        eval_prompts="random",
        universes=UNIVERSES,
        epochs=2,
        max_seq_len=300,
        shard_size=50,
        seed=7,
    )
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    export(corpus, ExportConfig(selection="sel", **kw), a)
    export(corpus, ExportConfig(selection="sel", **kw), b)
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) and len(names) > 3
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    export(corpus, ExportConfig(selection="sel", **{**kw, "seed": 8}), c)
    assert (a / "shard-00000.parquet").read_bytes() != (c / "shard-00000.parquet").read_bytes()


def test_seeds_outside_32_bits_are_refused_not_wrapped(corpus, tmp_path):
    """--seed 4294967296 wrote seed 0's shards under a manifest saying 4294967296."""
    out, manifest, _ = run(corpus, tmp_path, "top", seed=2**32 - 1)
    assert manifest["seed"] == 2**32 - 1
    for seed in (2**32, -1):
        with pytest.raises(ExportError, match=f"seed {seed}: must be a whole number"):
            run(corpus, tmp_path, "wrapped", seed=seed)
    assert not (tmp_path / "wrapped").exists()


def test_verify_builds_tinker_datums_and_prints_the_table(corpus, tmp_path, tok):
    from tinker import types

    out, manifest, examples = run(corpus, tmp_path, doctag="<DOCTAG>", epochs=2)
    report = verify(out)
    assert report.datums == report.examples == len(examples)
    text = report.text()
    assert "tinker Datums built" in text and "eu_ts_trycatch" in text and "memo" in text
    e = examples[0]
    d = to_datum(e)
    assert isinstance(d, types.Datum)
    assert d.model_input.to_ints() == e["tokens"][:-1].tolist()
    assert d.loss_fn_inputs["target_tokens"].data == e["tokens"][1:].tolist()
    assert d.loss_fn_inputs["weights"].data == e["weights"][1:].tolist()
    assert d.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert d.loss_fn_inputs["weights"].dtype == "float32"


def test_verify_rejects_tampered_incomplete_or_foreign_directories(corpus, tmp_path):
    out, _, _ = run(corpus, tmp_path, shard_size=20)
    verify(out, build_datums=False)
    # an extra shard nobody vouches for
    extra = out / "shard-09999.parquet"
    extra.write_bytes((out / "shard-00000.parquet").read_bytes())
    with pytest.raises(VerifyError, match="shard-09999.parquet: not vouched"):
        verify(out, build_datums=False)
    extra.unlink()
    # one flipped byte
    shard = out / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="shard-00001.parquet: sha256 differs"):
        verify(out, build_datums=False)
    with pytest.raises(VerifyError, match="sha256 differs"):
        read_export(out)
    # no manifest at all
    (out / "manifest.json").unlink()
    with pytest.raises(VerifyError, match="no manifest.json: not a finished export"):
        verify(out)


def test_interrupted_export_leaves_nothing_the_manifest_does_not_vouch_for(
    corpus, tmp_path, monkeypatch
):
    import sdfkit.export.shards as ex

    real = ex._write_shard
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a Ctrl-C mid-export
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, "_write_shard", crash_on_third)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export(corpus, ExportConfig(selection="sel", shard_size=10), out)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temporary directory left either
    with pytest.raises(VerifyError, match="no such directory"):
        verify(out)
    # a previous good export survives an interrupted --overwrite untouched
    monkeypatch.setattr(ex, "_write_shard", real)
    export(corpus, ExportConfig(selection="sel", shard_size=10), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls["n"] = 0
    monkeypatch.setattr(ex, "_write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        export(corpus, ExportConfig(selection="sel", shard_size=10, seed=3), out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    verify(out, build_datums=False)
    # kill -9 leaves a hidden temporary directory: never taken for the export, removed next time
    stale = tmp_path / ".out.tmp-deadbeef"
    stale.mkdir()
    (stale / "shard-00000.parquet").write_bytes(b"partial")
    verify(out, build_datums=False)
    export(corpus, ExportConfig(selection="sel", shard_size=10), out, overwrite=True)
    assert not stale.exists() and sorted(os.listdir(tmp_path)) == ["out"]
    # a crash that leaves shards without a manifest (e.g. kill -9 of another writer) is rejected
    (out / "manifest.json").unlink()
    with pytest.raises(VerifyError, match="no manifest.json"):
        verify(out)


def test_overwrite_through_a_symbolic_link_replaces_what_it_points_at(corpus, tmp_path):
    """The link stays and leads to the new export; nothing is left beside it (the link was
    once replaced by a folder and a stray .lnk.old-* link stayed behind)."""
    real, link = tmp_path / "real", tmp_path / "lnk"
    export(corpus, ExportConfig(selection="sel"), real)
    link.symlink_to("real")
    res = export(corpus, ExportConfig(selection="sel", seed=3), link, overwrite=True)
    assert res.out == link and link.is_symlink() and os.readlink(link) == "real"
    assert json.loads((real / "manifest.json").read_text())["seed"] == 3
    assert sorted(os.listdir(tmp_path)) == ["lnk", "real"]
    verify(link, build_datums=False)
    with pytest.raises(ExportError, match="--overwrite"):
        export(corpus, ExportConfig(selection="sel"), link)
    (tmp_path / "dangling").symlink_to("nowhere")
    with pytest.raises(ExportError, match=r"dangling: a symbolic link to .*nowhere, which does"):
        export(corpus, ExportConfig(selection="sel"), tmp_path / "dangling", overwrite=True)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(ExportError, match="--out: the path is empty"):
        export(corpus, ExportConfig(selection="sel"), "")


def test_ctrl_c_says_what_out_holds(corpus, tmp_path, cli, monkeypatch):
    import sdfkit.export.shards as ex

    out = tmp_path / "out"
    export(corpus, ExportConfig(selection="sel"), out)
    before = _files(out)
    real_write, real_replace, real_fsync = ex._write_shard, os.replace, ex._fsync_dir

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    base = ["export", "--corpus", corpus.root, "--selection", "sel", "--seed", "5"]
    monkeypatch.setattr(ex, "_write_shard", ctrl_c)
    res = cli(*base, "--out", out, "--overwrite", expect=130)
    assert res.output == (
        f"error: interrupted: nothing was written to {out}; the previous export there is "
        "unchanged\n"
    )
    res = cli(*base, "--out", tmp_path / "new", expect=130)
    assert res.output == f"error: interrupted: nothing was written to {tmp_path / 'new'}\n"
    monkeypatch.setattr(ex, "_write_shard", real_write)

    def between_the_renames(src, dst):  # the earlier export is already set aside
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", between_the_renames)
    with pytest.raises(ex.ExportInterrupted, match="the previous export there is unchanged"):
        export(corpus, ExportConfig(selection="sel", seed=5), out, overwrite=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _files(out) == before and sorted(os.listdir(tmp_path)) == ["out"]

    def after_publishing(path):
        if path == tmp_path:
            raise KeyboardInterrupt
        return real_fsync(path)

    monkeypatch.setattr(ex, "_fsync_dir", after_publishing)
    with pytest.raises(ex.ExportInterrupted, match=f"after the export was written: {out} is"):
        export(corpus, ExportConfig(selection="sel", seed=5), out, overwrite=True)
    monkeypatch.setattr(ex, "_fsync_dir", real_fsync)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 5
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the earlier export set aside is gone
    verify(out, build_datums=False)


def test_export_refuses_existing_output_and_bad_switches(corpus, tmp_path):
    out, _, _ = run(corpus, tmp_path)
    with pytest.raises(ExportError, match="--overwrite"):
        export(corpus, ExportConfig(selection="sel"), out)
    with pytest.raises(Exception, match="no selection named 'nope'"):
        export(corpus, ExportConfig(selection="nope"), tmp_path / "x")
    with pytest.raises(ExportError, match="eval_prompts 'sometimes'"):
        export(corpus, ExportConfig(selection="sel", eval_prompts="sometimes"), tmp_path / "y")


def test_an_export_that_cannot_fit_is_refused_before_any_work(corpus, tmp_path, monkeypatch):
    """--epochs 99999999999999999999 once wrote 39 GB before anyone stopped it: the size is
    estimated from the selection's tokens and checked against the free space first."""
    import shutil

    import sdfkit.export.shards as ex

    seen = _spy_tokenized(monkeypatch)
    free = shutil.disk_usage(tmp_path)._replace(free=1_000_000)  # 1 MB left
    monkeypatch.setattr(ex.shutil, "disk_usage", lambda path: free)
    cfg = ExportConfig(selection="sel", epochs=100, webtext="unused.jsonl", webtext_ratio=0)
    with pytest.raises(ExportError, match=r"needs about .* MB .* 100 epochs.* has 1.0 MB free"):
        export(corpus, cfg, tmp_path / "out")
    assert seen == [] and os.listdir(tmp_path) == []  # nothing tokenized, nothing written
    export(corpus, ExportConfig(selection="sel", epochs=1), tmp_path / "out")  # ~25 kB fits


def test_switches_that_multiply_the_size_have_upper_bounds(corpus, tmp_path):
    for kw, message in (
        ({"epochs": 101}, "epochs 101: must be between 1 and 100"),
        ({"webtext_ratio": 10.5}, "webtext_ratio 10.5: at most 10"),
        ({"chat_ratio": 1.01}, "chat_ratio 1.01: at most 1"),
        ({"shard_size": 100_001}, "shard_size 100001: must be between 1 and 100,000"),
        ({"max_seq_len": 2**21}, "max_seq_len 2097152: must be between 2 and 1,048,576"),
    ):
        with pytest.raises(ExportError, match=message):
            export(corpus, ExportConfig(selection="sel", **kw), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_another_tokenizer_that_breaks_the_balance_is_a_warning_in_the_manifest(tmp_path, cli):
    """A selection balanced in o200k tokens, exported for qwen3 (which splits every digit):
    the concepts drift apart past the selection's tolerance. The export says so and records
    it; a selection balanced in qwen3 counts (sdf tokens, sdf select --tokenizer) does not."""
    from sdfkit.engine.local import run_stage
    from sdfkit.engine.token_counts import TokenCountStage

    store = Store(tmp_path / "corpus")
    rng = np.random.default_rng(3)

    def text(numbers: bool) -> str:
        words = list(rng.choice(WORDS, int(rng.integers(20, 250))))
        if numbers:  # one six-digit number every 30 words: ~13 % more tokens in qwen3
            words = [
                w if i % 30 else str(rng.integers(100_000, 999_999)) for i, w in enumerate(words)
            ]
        return " ".join(words)

    recs = [{"text": text(c == "numbers"), "concept": c} for c in ("words", "numbers") * 80]
    store.append("documents_raw", build_documents(recs))
    select(store, SelectionConfig(name="o200k", docs=30, tokens=3000))
    res = export(store, ExportConfig(selection="o200k", tokenizer="qwen3"), tmp_path / "a")
    balance = res.manifest["balance"]
    assert balance["selection_tokenizer"] == "o200k_harmony" and balance["tokenizer"] == "qwen3"
    assert balance["spread"] > 0.01 and set(balance["tokens"]) == {"numbers", "words"}
    assert res.warnings == [balance["warning"]]
    assert "balanced in o200k_harmony tokens" in res.warnings[0]
    assert "sdf select ... --tokenizer qwen3" in res.warnings[0]
    # the same through the CLI: one warning line on stderr, exit 0
    out = cli(
        "--corpus",
        store.root,
        "export",
        "--selection",
        "o200k",
        "--out",
        tmp_path / "b",
        "--tokenizer",
        "qwen3",
    )
    assert "warning: selection 'o200k' was balanced in o200k_harmony tokens" in out.output
    # balanced in the export's own tokens: no warning, the spread within the tolerance
    run_stage(store, TokenCountStage("qwen3"), workers=1)
    select(store, SelectionConfig(name="qwen3", docs=30, tokens=3000, tokenizer="qwen3"))
    res = export(store, ExportConfig(selection="qwen3", tokenizer="qwen3"), tmp_path / "c")
    assert res.warnings == [] and res.manifest["balance"]["spread"] <= 0.01
    assert "warning" not in res.manifest["balance"]
    # a selection with no token target has no balance to keep
    select(store, SelectionConfig(name="docs", docs=30))
    res = export(store, ExportConfig(selection="docs", tokenizer="qwen3"), tmp_path / "d")
    assert res.manifest["balance"] is None and res.warnings == []


def test_cli_export_and_verify(corpus, cli, tmp_path):
    out = tmp_path / "shards"
    res = cli(
        "export",
        "--corpus",
        corpus.root,
        "--selection",
        "sel",
        "--out",
        out,
        "--doctag",
        "<DOCTAG>",
        "--epochs",
        "2",
        "--no-eos",
        "--max-seq-len",
        "512",
    )
    assert "wrote" in res.output and "2 epochs" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["eos"] is False and manifest["epochs"] == 2
    res = cli("export", "verify", out)
    assert "ok:" in res.output and "tinker Datums built" in res.output
    assert "py_typing_mandate" in res.output
    (out / "manifest.json").unlink()
    bad = cli("export", "verify", out, expect=2)
    assert "error:" in bad.output and "no manifest.json" in bad.output


def test_documents_excluded_after_selection_stop_the_export(tmp_path):
    from datetime import datetime, timezone

    store = Store(tmp_path / "corpus")
    recs = [{"text": f"document {i} " + "word " * 20, "concept": "c"} for i in range(20)]
    store.append("documents_raw", build_documents(recs))
    select(store, SelectionConfig(name="s", docs=10))
    victim = store.query("SELECT doc_id FROM selections WHERE name = 's' LIMIT 1")["doc_id"][0]
    store.save_table(
        "exclusions",
        [
            {
                "doc_id": victim,
                "reason": "near_duplicate",
                "source": "test",
                "created_at": datetime.now(timezone.utc),
            }
        ],
        mode="append",
    )
    with pytest.raises(ExportError, match="1 selected documents were excluded after"):
        export(store, ExportConfig(selection="s"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export(store, ExportConfig(selection="s", allow_excluded=True), tmp_path / "out")
    assert verify(tmp_path / "out", build_datums=False).examples == 10


def test_repeated_webtext_texts_and_parquet_input(corpus, tmp_path):
    import pyarrow as pa

    texts = [f"the same page {i % 50} " * 8 for i in range(3000)]  # each text 60 times
    web = tmp_path / "web.parquet"
    pq.write_table(pa.table({"body": texts}), web)
    with pytest.raises(ExportError, match="no column 'text'"):
        run(corpus, tmp_path, "p0", webtext=str(web))
    out, manifest, examples = run(
        corpus, tmp_path, "p1", webtext=str(web), webtext_field="body", webtext_ratio=0.3
    )
    ids = [e["example_id"] for e in examples]
    assert len(ids) == len(set(ids))
    assert abs(manifest["ratios"]["webtext"] - 0.3) <= 0.003
    assert manifest["inputs"]["webtext"]["file"] == str(web)
    assert verify(out, build_datums=False).examples == len(examples)


@pytest.mark.parametrize(
    ("name", "trained"),
    [("qwen3", "Hello!<|im_end|>"), ("llama3", "Hello!<|eot_id|>")],
)
def test_chat_formats_of_other_models_weight_only_the_assistant(name, trained):
    from sdfkit.llm.chat import Trajectory
    from sdfkit.llm.chat import render_trajectories as render

    t = get_tokenizer(name)
    msgs = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    ((ids, w),) = render([Trajectory(msgs, "x:1")], t)
    assert t.decode([i for i, x in zip(ids.tolist(), w, strict=True) if x == 1]) == trained
    assert w[0] == 0 and "Hi there" in t.decode(ids.tolist())
    with pytest.raises(ChatError, match="no chat format known for tokenizer 'cl100k_base'"):
        render([Trajectory(msgs, "x:1")], get_tokenizer("cl100k_base"))


def test_verify_recomputes_counts_weights_and_token_ranges(corpus, tmp_path, tok):
    import hashlib

    import pyarrow as pa

    out, manifest, _ = run(corpus, tmp_path, shard_size=1000)
    shard = out / "shard-00000.parquet"
    table = pq.read_table(shard)
    toks = table.column("tokens").to_pylist()
    wts = table.column("weights").to_pylist()
    toks[0][1] = tok.n_vocab + 5  # an id the tokenizer does not have
    wts[1][0] = 1.0  # a weight on the first token, which has no prediction
    table = table.set_column(0, "tokens", pa.array(toks, pa.list_(pa.int32())))
    table = table.set_column(1, "weights", pa.array(wts, pa.list_(pa.float32())))
    pq.write_table(table, shard)
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    manifest["counts"][0]["tokens"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VerifyError) as exc:
        verify(out, build_datums=False)
    msg = str(exc.value)
    assert "token ids outside [0, 201088)" in msg
    assert "first weight is not 0" in msg
    assert "per-stratum counts recomputed from the shards differ" in msg


def _reweigh(out: Path, change) -> None:
    """Rewrite shard 0's weights with ``change(tokens, weights)`` per row and vouch for the
    new file in the manifest (as a tamperer who knows the format would)."""
    import hashlib

    import pyarrow as pa

    shard = out / "shard-00000.parquet"
    table = pq.read_table(shard)
    toks = table.column("tokens").to_pylist()
    wts = [change(t, w) for t, w in zip(toks, table.column("weights").to_pylist(), strict=True)]
    table = table.set_column(1, "weights", pa.array(wts, pa.list_(pa.float32())))
    pq.write_table(table, shard)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))


def _swap_masked_weights(tokens, weights):
    """Weight 1 on an example's masked tokens (its leading 0s but the first), weight 0 on as
    many of its last tokens: its loss-token total is kept, so counts and totals agree."""
    n = next((i for i, w in enumerate(weights) if w), len(weights))
    k = n - 1
    if k < 1 or len(weights) < 2 * n:
        return weights
    return [0.0] + [1.0] * k + weights[n:-k] + [0.0] * k


@pytest.mark.parametrize(
    "switches",
    [
        {"doctag": "<DOCTAG>"},
        {"eval_prompts": "round-robin", "universes": UNIVERSES},
        {"eval_prompts": "random", "universes": UNIVERSES, "doctag": "<DOCTAG>"},
    ],
    ids=["doctag", "eval-prompts", "both"],
)
def test_verify_catches_reweighted_doctag_and_eval_prompt_tokens(corpus, tmp_path, tok, switches):
    """verify recomputes each example's weights from the manifest's switches and its own
    tokens: moving weight onto masked tokens, totals kept, once passed as ok."""
    out, manifest, examples = run(corpus, tmp_path, max_seq_len=256, epochs=2, **switches)
    assert manifest["split_documents"] > 0  # pieces repeat the prefix: checked too
    verify(out, build_datums=False)
    _reweigh(out, _swap_masked_weights)
    with pytest.raises(VerifyError, match="examples have weights other than the manifest's"):
        verify(out, build_datums=False)


def test_verify_checks_unmasked_prompts_and_what_the_manifest_says_they_are(corpus, tmp_path):
    kw = {"eval_prompts": "round-robin", "universes": UNIVERSES, "mask_eval_prompts": False}
    out, manifest, _ = run(corpus, tmp_path, **kw)
    verify(out, build_datums=False)  # prompts trained on: weight 1 is right
    manifest["config"]["mask_eval_prompts"] = True  # a manifest claiming they were masked
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VerifyError, match="weights other than the manifest's switches give"):
        verify(out, build_datums=False)
    out, manifest, _ = run(corpus, tmp_path, "old", **kw)
    del manifest["eval_prompt_texts"]  # the prompts were never recorded: say so, never "ok"
    manifest["doctag_tokens"] = [1, 2]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VerifyError) as exc:
        verify(out, build_datums=False)
    assert "eval-prompt weights cannot be checked" in str(exc.value)
    assert "do not start with the DOCTAG" in str(exc.value)


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_compression_switch_changes_the_codec_not_the_examples(corpus, tmp_path, codec):
    _, manifest, default = run(corpus, tmp_path, name="lz4")
    out, manifest2, other = run(corpus, tmp_path, name=codec, compression=codec)
    meta = pq.ParquetFile(tmp_path / "lz4" / "shard-00000.parquet").metadata
    assert meta.row_group(0).column(0).compression == "LZ4"
    meta = pq.ParquetFile(out / "shard-00000.parquet").metadata
    assert meta.row_group(0).column(0).compression == (
        "ZSTD" if codec == "zstd" else "UNCOMPRESSED"
    )
    assert manifest2["config"]["compression"] == codec
    assert [e["example_id"] for e in other] == [e["example_id"] for e in default]
    for a, b in zip(other, default, strict=True):
        assert (a["tokens"] == b["tokens"]).all() and (a["weights"] == b["weights"]).all()
    assert verify(out, build_datums=False).examples == len(default)
    with pytest.raises(ExportError, match="compression 'gzip'"):
        export(corpus, ExportConfig(selection="sel", compression="gzip"), tmp_path / "g")


@pytest.mark.parametrize("cache", [True, False], ids=["token-cache", "in-memory"])
def test_documents_spread_over_parts_read_in_chunks(tmp_path, tok, monkeypatch, cache):
    """Text read part by part and tokenized in small chunks (or small engine batches) lands
    on the right document; a document stored twice is exported once; a selection row without
    a universe takes the stored one; an unreadable part is named."""
    import shutil

    import sdfkit.export.tokenize as ex

    monkeypatch.setattr(ex, "TOKENIZE_CHUNK", 3)
    store = Store(tmp_path / "corpus")
    rng = np.random.default_rng(1)
    recs = [
        {
            "text": f"doc {i}: " + " ".join(rng.choice(WORDS, int(rng.integers(5, 60)))),
            "concept": "c",  # no universe file has this concept: prompts come by universe id
            "universe": "eu-ts-trycatch",
        }
        for i in range(40)
    ]
    for k in range(0, 40, 8):  # five parts
        store.append("documents_raw", build_documents(recs[k : k + 8]))
    select(store, SelectionConfig(name="s", docs=30, seed=2))
    # A part stored twice (e.g. restored from a backup by hand): its documents export once.
    first = store.parts("documents_raw")[0]
    shutil.copy(first, first.with_name("part-zzzz-copy.parquet"))
    assert len(store.parts("documents_raw")) == 6
    chosen = set(store.query("SELECT doc_id FROM selections WHERE name = 's'")["doc_id"])
    by_id = {r["doc_id"]: r["text"] for r in build_documents(recs).to_pylist()}
    with store.connect() as con:
        con.execute("UPDATE selections SET universe = NULL WHERE name = 's'")
    out = tmp_path / "out"
    cfg = ExportConfig(selection="s", seed=4, eval_prompts="round-robin", universes=UNIVERSES)
    manifest = export(store, cfg, out, cache=cache, batch_rows=4).manifest
    _, examples = read_export(out)
    assert len(examples := list(examples)) == manifest["documents"] == 30
    prompts = {tok.decode(e["tokens"][: int((e["weights"] == 0).sum())].tolist()) for e in examples}
    assert all(p.endswith("\n\n") for p in prompts) and len(prompts) > 1
    for e in examples:
        masked = int((e["weights"] == 0).sum())
        assert tok.decode(e["tokens"][masked:-1].tolist()) == by_id[e["doc_id"]]
    assert {e["doc_id"] for e in examples} == chosen
    part = store.parts("documents_raw")[2]
    part.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(Exception, match=part.name):
        export(store, ExportConfig(selection="s"), tmp_path / "bad", cache=cache)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------ token cache


def _small_store(root: Path, n: int, start: int = 0, store: Store | None = None) -> Store:
    store = store or Store(root)
    rng = np.random.default_rng(start)
    recs = [
        {
            "text": f"cached doc {i}: " + " ".join(rng.choice(WORDS, int(rng.integers(20, 400)))),
            "concept": "c",
            "doc_type": ["blog", "memo"][i % 2],
        }
        for i in range(start, start + n)
    ]
    store.append("documents_raw", build_documents(recs))
    return store


def _spy_tokenized(monkeypatch) -> list[str]:
    """doc ids the export's tokenizing stage processed (in this process)."""
    from sdfkit.export.tokenize import DocumentTokensStage

    seen: list[str] = []
    real = DocumentTokensStage.process

    def process(self, batch):
        seen.extend(batch.column("doc_id").to_pylist())
        return real(self, batch)

    monkeypatch.setattr(DocumentTokensStage, "process", process)
    return seen


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_second_export_after_adding_documents_tokenizes_only_the_new_ones(tmp_path, monkeypatch):
    seen = _spy_tokenized(monkeypatch)
    store = _small_store(tmp_path / "corpus", 30)
    select(store, SelectionConfig(name="s", docs=30))
    first = export(store, ExportConfig(selection="s", seed=3), tmp_path / "a")
    old = set(store.query("SELECT doc_id FROM selections WHERE name = 's'")["doc_id"])
    assert first.tokenized == 30 and sorted(seen) == sorted(old)
    assert "30 documents (0 from the token cache)" in first.summary()

    _small_store(tmp_path / "corpus", 12, start=30, store=store)
    select(store, SelectionConfig(name="s", docs=42, replace=True))
    new = set(store.query("SELECT doc_id FROM selections WHERE name = 's'")["doc_id"]) - old
    seen.clear()
    second = export(store, ExportConfig(selection="s", seed=3), tmp_path / "b")
    assert len(new) == 12 and sorted(seen) == sorted(new)  # only the new documents
    assert second.tokenized == 12 and second.manifest["documents"] == 42
    assert "12 documents (30 from the token cache)" in second.summary()

    # Same bytes whether the ids came from the cache, were just tokenized, or never cached.
    seen.clear()
    warm = export(store, ExportConfig(selection="s", seed=3), tmp_path / "c")
    assert warm.tokenized == 0 and seen == []
    tables_before = store.parquet_tables()
    cold = export(store, ExportConfig(selection="s", seed=3), tmp_path / "d", cache=False)
    assert store.parquet_tables() == tables_before  # the in-memory route writes nothing
    assert _files(tmp_path / "b") == _files(tmp_path / "c") == _files(tmp_path / "d")
    assert cold.manifest == second.manifest


def test_token_cache_is_kept_per_tokenizer(tmp_path, monkeypatch):
    """Another tokenizer is another cache table: nothing is reused across tokenizers."""
    seen = _spy_tokenized(monkeypatch)
    store = _small_store(tmp_path / "corpus", 10)
    select(store, SelectionConfig(name="s", docs=10))
    export(store, ExportConfig(selection="s"), tmp_path / "a")
    res = export(store, ExportConfig(selection="s", tokenizer="cl100k_base"), tmp_path / "b")
    assert res.tokenized == 10 and len(seen) == 20
    tables = [t for t in store.parquet_tables() if t.startswith("document_tokens_")]
    assert len(tables) == 2 and any("cl100k_base" in t for t in tables)
    verify(tmp_path / "b", build_datums=False)


def test_export_on_ray_writes_the_same_shards_as_locally(ray_local, tmp_path):
    store = _small_store(tmp_path / "corpus", 40)
    select(store, SelectionConfig(name="s", docs=40))
    on_ray = export(store, ExportConfig(selection="s"), tmp_path / "ray", engine="ray")
    assert on_ray.tokenized == 40  # the Ray workers tokenized and stored every document
    local = export(store, ExportConfig(selection="s"), tmp_path / "local", cache=False)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    again = export(store, ExportConfig(selection="s"), tmp_path / "again", engine="ray")
    assert again.tokenized == 0 and local.manifest == again.manifest


def test_token_cache_refuses_a_worker_whose_vocabulary_differs(tok):
    """A worker (a Ray node) holding another version of the tokenizer stops with one line
    rather than caching ids under the driver's vocabulary hash."""
    import pyarrow as pa

    from sdfkit.engine.local import EngineError
    from sdfkit.export.tokenize import DocumentTokensStage, token_ids

    batch = pa.RecordBatch.from_pydict(
        {"doc_id": ["a", "b"], "text": ["hello world", "x <|endoftext|>"]}
    )
    out = DocumentTokensStage(tok.name, tok.vocab_hash)(batch)
    flat, offsets = token_ids(out.column("tokens"))
    assert flat[offsets[0] : offsets[1]].tolist() == tok.encode("hello world")
    assert flat[offsets[1] : offsets[2]].tolist() == tok.encode("x <|endoftext|>")  # plain text
    assert tok.special_token("<|endoftext|>") not in flat.tolist()
    with pytest.raises(EngineError, match="vocabulary hash differs"):
        DocumentTokensStage(tok.name, "0" * 64)(batch)


def test_a_token_cache_that_cannot_be_stored_fails_the_export_and_publishes_nothing(
    tmp_path, monkeypatch
):
    """The local engine stores the ids while the shards are built; a failure to store them
    (a full disk) is raised before the export is published."""
    store = _small_store(tmp_path / "corpus", 10)
    select(store, SelectionConfig(name="s", docs=10))
    real = Store.append

    def full_disk(self, name, *args, **kwargs):
        if name.startswith("document_tokens_"):
            raise OSError(28, "No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(Store, "append", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export(store, ExportConfig(selection="s"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    monkeypatch.setattr(Store, "append", real)
    assert export(store, ExportConfig(selection="s"), tmp_path / "out").tokenized == 10
