"""spaCy's greedy NER decoding, compiled (numba): the entities of ``nlp.pipe``, ~2.5x sooner.

The names audit runs spaCy's NER (``en_core_web_sm``) on short windows of text. Profiled on
the seed corpus, 41 % of that time went to taking and dropping the GIL: the spaCy 3.8 wheel's
transition loop runs without the GIL, but its state accessors take it back for a moment on
every call (``PyGILState_Ensure`` under ``StateC::B_`` and ``safe_get``), many times per
token.

Everything in spaCy's model that computes numbers still runs in spaCy and thinc, as in
``nlp.pipe``: the tokenizer, the NER's own tok2vec, its projection, and the precomputed
hidden layer (one row per token and feature). This module replaces only the loop that turns
those numbers into entities, one token at a time:

- the state's three features: the next token, the first token of the open entity, and the
  token before the next one while an entity is open (the padding row where there is none);
- the hidden layer: those rows summed in that order, plus the bias, then the largest piece
  of each unit (maxout);
- the output layer: each move's score, products accumulated in order (fused multiply-add,
  as blis's kernel does), plus the move's bias;
- the BILUO moves valid in that state, for documents without preset entities (what
  ``make_doc`` gives): begin needs no open entity, a next token in the same sentence and a
  non-space token; in and last continue the open entity's label; unit needs no open entity
  and a non-space token; out needs no open entity;
- the valid move with the highest score (the first on a tie), and its transition.

``tests/test_ner_kernels.py`` compares the entities with ``nlp.pipe`` on the audit's
windows, whole documents and edge cases (empty texts, spaces, newlines, entities at the
end). ``decoder_for(nlp)`` gives None, with the reason, for pipelines this loop does not
copy (a beam, extra state tokens, a model without an output layer, unseen classes, moves
it does not know, a shared tok2vec, any component besides the NER); the audit then uses
``nlp.pipe``. The scores equal blis's bit for bit where numba compiles the products with
fused multiply-add, as on every x86 CPU with FMA (``NUMBA_CPU_NAME=generic`` would not). Import this module only where NER
runs: importing numba costs ~0.3 s, and a fresh install compiles the kernel once (cached).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from numba import njit

#: Move codes of the kernel (the order of spaCy's BILUO moves; 0 is "missing").
_MOVES = {"B": 1, "I": 2, "L": 3, "U": 4, "O": 5}
#: Documents per forward pass of the tok2vec (nlp.pipe's sub-batch at batch_size 64).
BATCH = 16


@njit(nogil=True, cache=True, fastmath={"contract"})
def decode(cached, bias, weights, out_bias, offsets, lengths, space, sent_start, move, label, out):
    """Greedy BILUO decoding of each document ``d`` (tokens ``offsets[d]`` to
    ``offsets[d] + lengths[d]`` of the batch). ``cached`` is the precomputed hidden layer
    (row 0 the padding, row t + 1 token t; per feature, unit and piece), ``bias`` its bias
    (unit, piece); ``weights`` and ``out_bias`` the output layer (move, unit); ``move`` and
    ``label`` each move's code and label index (0: none). Entities go to ``out`` as rows
    (document, start token, end token, label index) in order; returns their number."""
    units = cached.shape[2]
    pieces = cached.shape[3]
    n_moves = weights.shape[0]
    summed = np.empty(units * pieces, np.float32)
    hidden = np.empty(units, np.float32)
    found = 0
    for d in range(offsets.shape[0]):
        off = offsets[d]
        n = lengths[d]
        b = 0
        is_open = False
        ent_start = 0
        ent_label = 0
        while b < n:
            # features: next token; first token of the open entity; the token before the next
            for j in range(units * pieces):
                summed[j] = np.float32(0.0)
            for f in range(3):
                if f == 0:
                    row = off + b + 1
                elif not is_open:
                    row = 0
                elif f == 1:
                    row = off + ent_start + 1
                else:
                    row = off + b
                for u in range(units):
                    for p in range(pieces):
                        summed[u * pieces + p] += cached[row, f, u, p]
            for u in range(units):
                top = summed[u * pieces] + bias[u, 0]
                for p in range(1, pieces):
                    v = summed[u * pieces + p] + bias[u, p]
                    if v > top:
                        top = v
                hidden[u] = top
            left = n - b
            best = -1
            best_score = np.float32(0.0)
            for c in range(n_moves):
                kind = move[c]
                lab = label[c]
                if kind == 1:  # begin
                    ok = (
                        not is_open
                        and left >= 2
                        and lab != 0
                        and sent_start[off + b + 1] != 1
                        and not space[off + b]
                    )
                elif kind == 2:  # in
                    ok = (
                        is_open
                        and left >= 2
                        and lab != 0
                        and ent_label == lab
                        and sent_start[off + b + 1] != 1
                    )
                elif kind == 3:  # last
                    ok = is_open and lab != 0 and ent_label == lab
                elif kind == 4:  # unit
                    ok = not is_open and lab != 0 and not space[off + b]
                elif kind == 5:  # out
                    ok = not is_open
                else:
                    ok = False
                if not ok:
                    continue
                acc = np.float32(0.0)
                for u in range(units):
                    acc += hidden[u] * weights[c, u]
                acc = acc + out_bias[c]
                if best == -1 or acc > best_score:
                    best = c
                    best_score = acc
            if best == -1:
                # no valid move (spaCy's move sets always have one): spaCy ends the state
                # as it is (``force_final``), and an entity still open is not kept
                break
            kind = move[best]
            if kind == 1:
                is_open = True
                ent_start = b
                ent_label = label[best]
            elif kind == 3:
                out[found, 0] = d
                out[found, 1] = ent_start
                out[found, 2] = b + 1
                out[found, 3] = ent_label
                found += 1
                is_open = False
            elif kind == 4:
                out[found, 0] = d
                out[found, 1] = b
                out[found, 2] = b + 1
                out[found, 3] = label[best]
                found += 1
            b += 1
    return found


class CompiledNer:
    """The NER of a loaded spaCy pipeline, decoded by ``decode``."""

    def __init__(self, nlp: Any) -> None:
        from spacy.attrs import ENT_IOB, IS_SPACE, SENT_START

        ner = nlp.get_pipe("ner")  # no reference to nlp kept: it keys _DECODERS weakly
        self.tok2vec, self.lower, self.upper = ner.model.layers
        moves = ner.moves
        names = [moves.get_class_name(i) for i in range(moves.n_moves)]
        kinds = [n.split("-", 1)[0] for n in names]
        labels = [n.split("-", 1)[1] if "-" in n else "" for n in names]
        self.labels = ["", *sorted({lab for lab in labels if lab})]
        self.move = np.array([_MOVES[k] for k in kinds], np.int32)
        self.label = np.array([self.labels.index(lab) for lab in labels], np.int32)
        self.bias = np.ascontiguousarray(self.lower.get_param("b"), np.float32)
        self.weights = np.ascontiguousarray(self.upper.get_param("W"), np.float32)
        self.out_bias = np.ascontiguousarray(self.upper.get_param("b"), np.float32)
        self._attrs = [IS_SPACE, SENT_START, ENT_IOB]

    def entities(self, docs: list[Any]) -> list[list[tuple[int, int, str]]]:
        """Per document: its entities as (start token, end token, label), as ``doc.ents``
        after ``nlp.pipe`` gives them. The documents must be fresh (``nlp.make_doc``): a
        document with preset entities is a ValueError."""
        out: list[list[tuple[int, int, str]]] = []
        for lo in range(0, len(docs), BATCH):
            out.extend(self._batch(docs[lo : lo + BATCH]))
        return out

    def _batch(self, docs: list[Any]) -> list[list[tuple[int, int, str]]]:
        lengths = np.array([len(doc) for doc in docs], np.int64)
        total = int(lengths.sum())
        found: list[list[tuple[int, int, str]]] = [[] for _ in docs]
        if total == 0:
            return found
        offsets = np.zeros(len(docs), np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        flags = np.concatenate([doc.to_array(self._attrs) for doc in docs if len(doc)])
        if flags[:, 2].any():
            raise ValueError(
                "documents with preset entities (ent_iob set): the compiled decoding copies "
                "spaCy's moves for fresh documents only; use nlp.pipe"
            )
        cached = self.lower.predict(self.tok2vec.predict(docs))
        space = np.append(flags[:, 0] != 0, False)  # one past the end: never read as a token
        sent_start = np.append(flags[:, 1].astype(np.int64), 0)
        rows = np.empty((total, 4), np.int64)
        n = decode(
            np.ascontiguousarray(cached, np.float32),
            self.bias,
            self.weights,
            self.out_bias,
            offsets,
            lengths,
            space,
            sent_start,
            self.move,
            self.label,
            rows,
        )
        for d, start, end, lab in rows[:n].tolist():
            found[d].append((start, end, self.labels[lab]))
        return found


def warm_kernel() -> None:
    """Load ``decode`` from numba's cache (compiling it on a fresh install: ~2 s), with the
    argument types ``CompiledNer`` passes, without loading spaCy."""
    f32, i64, i32 = np.float32, np.int64, np.int32
    decode(
        np.zeros((2, 3, 1, 1), f32),
        np.zeros((1, 1), f32),
        np.zeros((1, 1), f32),
        np.zeros(1, f32),
        np.zeros(1, i64),
        np.ones(1, i64),
        np.zeros(2, np.bool_),
        np.zeros(2, i64),
        np.full(1, _MOVES["O"], i32),
        np.zeros(1, i32),
        np.zeros((1, 4), i64),
    )


_DECODERS: weakref.WeakKeyDictionary[Any, CompiledNer] = weakref.WeakKeyDictionary()


def moves_problem(names: list[str]) -> str | None:
    """Why the kernel cannot decode with these moves (spaCy's class names, "B-PERSON"...),
    or None: only B, I, L, U and O, with O and all four of B, I, L, U for every label, so
    that some move is always valid, as in every NER spaCy trains."""
    if not names or any(n.split("-", 1)[0] not in _MOVES for n in names):
        return "its NER has moves other than B, I, L, U and O"
    # "U-" (no label) is spaCy's own and never valid: only named labels need their moves
    labels = {n.split("-", 1)[1] for n in names if "-" in n} - {""}
    if "O" not in names or any(f"{k}-{lab}" not in names for lab in labels for k in "BILU"):
        return "its NER lacks the O move or one of B, I, L and U for a label"
    return None


def unsupported(nlp: Any) -> str | None:
    """Why ``decode`` cannot stand in for this pipeline's NER, or None when it can."""
    try:
        ner = nlp.get_pipe("ner")
        model = ner.model
        if model.name != "parser_model" or len(model.layers) != 3:
            return f"its NER model is {model.name!r}, not spaCy's transition-based parser"
        if ner.cfg.get("beam_width", 1) != 1:
            return "its NER uses a beam"
        if not model.attrs.get("has_upper"):
            return "its NER has no output layer"
        if model.attrs.get("unseen_classes"):
            return "its NER has unseen classes"
        lower = model.layers[1]
        if lower.name != "precomputable_affine" or lower.get_dim("nF") != 3:
            return "its NER reads other state features than the next token and the entity"
        problem = moves_problem([ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)])
        if problem:
            return problem
        if any("listener" in node.name for node in model.walk()):
            return "its NER reads a shared tok2vec (a listener), which nlp.pipe fills first"
        others = [name for name in nlp.pipe_names if name != "ner"]
        if others:
            # make_doc then NER is what nlp.pipe does only when nothing else runs: another
            # component may set entities, sentence starts or the features NER reads
            return f"the pipeline runs other components than its NER: {', '.join(others)}"
    except Exception as exc:  # noqa: BLE001 - anything not shaped like spaCy's NER
        return f"it is not a spaCy pipeline with an NER ({type(exc).__name__}: {exc})"
    return None


def decoder_for(nlp: Any) -> CompiledNer | None:
    """The compiled decoder of this pipeline's NER (built once per pipeline), or None where
    ``unsupported`` gives a reason."""
    if nlp in _DECODERS:
        return _DECODERS[nlp]
    if unsupported(nlp) is not None:
        return None
    decoder = CompiledNer(nlp)
    decoder.entities([nlp.make_doc("Warm up the kernel, Ada Lovelace.")])  # load or compile
    _DECODERS[nlp] = decoder
    return decoder
