"""Anti-universe compliance: which documents say what their own universe bans.

Every universe file lists ``anti_universe: names:`` and ``phrases:``; the generation prompt
asks the model to avoid them, and models do not always listen. This audit reads each
document against the bans of *its* universe (``documents.universe``; a document without a
known universe, e.g. an ingested one, answers to every universe of its concept) and reports,
per universe, every banned name and phrase with its ``mentions``, ``documents`` and example
``doc_ids``, overall and per doc type. Violating documents are written to ``exclusions``
(source ``anti_universe``, reason ``REASON``) so selection leaves them out; ``sdf check``'s
``max_anti_universe_documents`` (default 0) fails while any remain among the documents a
selection could take.

Matching:

- a name is matched case-insensitively as whole words, any whitespace between them, with a
  title before it or a possessive after it ("Dr. SARAH CHEN's" is Sarah Chen); a leading
  title in the ban ("Dr. Sarah Mitchell") is dropped first, as the names audit does. Its
  first-name initial ("S. Chen") counts too, and a lone capitalised surname ("Chen said")
  counts in a document that names the person in full, exactly as the names audit folds them;
- a phrase is matched case-insensitively as whole words with any whitespace or punctuation
  between them (either apostrophe inside a word).

The audited documents are those not excluded for another reason (a near-duplicate loser, a
failed grade, a document already replaced by ``sdf generate --replace-excluded``, your own
``sdf exclude``), so the figure counts what a selection could still take.

``propose`` (``sdf audit names --propose``, and the report) lists per universe the names and
phrases to ban next, from the names and n-gram audits' stored tables, never one already
banned; ``apply_proposals`` writes them into the universe file, keeping its comments and
order.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sdfkit.audits import AuditResult, CatalogWrite
from sdfkit.errors import SdfError
from sdfkit.settings import Checked, at_least, between

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.generate.universe import Universe
    from sdfkit.store.catalog import Store

#: The reason recorded in ``exclusions``: ``sdf exclude --lift --reason 'anti-universe
#: violation'`` lifts them (the next audit writes them again unless the bans change).
REASON = "anti-universe violation"
SOURCE = "anti_universe"


@dataclass
class Config(Checked):
    """Settings of the anti-universe compliance audit."""

    where_: ClassVar[str] = "audits.anti_universe"

    #: Universe files (globs allowed); empty: the universes ``sdf generate`` stored.
    universes: list[str] = field(default_factory=list)
    #: Example doc ids kept per item.
    examples: int = field(default=5, metadata=at_least(0))
    #: Write the violating documents to ``exclusions`` (source anti_universe).
    write_exclusions: bool = True
    #: Also audit documents excluded for other reasons (default: only what selection sees).
    include_excluded: bool = False
    #: Count a first-name initial ("S. Chen") as the banned person.
    match_initials: bool = True
    #: Count a lone capitalised surname in a document that names the person in full.
    fold_surnames: bool = True
    #: Proposals: a name in at least this share of a concept's documents (or holding this
    #: share of its name mentions) is proposed for that concept's universes.
    propose_doc_share: float = field(default=0.05, metadata=between(0, 1))
    propose_mention_share: float = field(default=0.05, metadata=between(0, 1))
    #: Proposals: an n-gram flagged by the n-gram audit inside a concept is proposed as a
    #: phrase, unless the universe's own text (description, facts, keywords) contains it.
    propose_phrases: bool = True
    #: Proposals: shortest n-gram proposed as a phrase (2- and 3-grams are mostly ordinary
    #: English: "the team had").
    propose_min_n: int = field(default=4, metadata=at_least(1))
    #: At most this many names and this many phrases proposed per universe.
    propose_max: int = field(default=10, metadata=at_least(0))


# ------------------------------------------------------------------------ matching
_TITLES = ("Dr", "Prof", "Mr", "Mrs", "Ms", "Mx", "Sir", "Dame", "Professor", "Doctor")


def ban_key(text: str) -> str:
    """How two bans (or a ban and a proposal) are compared: titles, possessives, case and
    spacing ignored ("Dr. Sarah Chen's" and "sarah  chen" are the same ban)."""
    words = text.replace("’", "'").split()
    while len(words) > 1 and words[0].rstrip(".") in _TITLES:
        words = words[1:]
    if words and words[-1].lower().endswith("'s"):
        words[-1] = words[-1][:-2]
    return " ".join(w.strip(",;:!?()[]\"'").lower() for w in words if w.strip(",;:!?()[]\"'"))


def _words_pattern(words: list[str], joiner: str = r"\s+") -> str:
    parts = []
    for w in words:
        parts.append("".join("['’]" if c in "'’" else re.escape(c) for c in w))
    return joiner.join(parts)


@dataclass
class Ban:
    """One banned name or phrase of a universe, with its compiled matchers."""

    kind: str  # "name" or "phrase"
    text: str
    full: re.Pattern[str]
    initial: re.Pattern[str] | None = None
    surname: re.Pattern[str] | None = None
    #: A lower-case word every match contains: a text without it is skipped without regex.
    needle: str = ""

    def count(self, text: str, fold_surnames: bool = True, lowered: str | None = None) -> int:
        """Mentions of this ban in ``text`` (0: the document does not violate it).
        ``lowered``: ``text.lower()``, when the caller has it (one per document)."""
        if self.needle and self.needle not in (lowered if lowered is not None else text.lower()):
            return 0
        spans = [m.span() for m in self.full.finditer(text)]
        if self.initial is not None:
            spans += [m.span() for m in self.initial.finditer(text)]
        if not spans:
            return 0
        n = len(spans)
        if fold_surnames and self.surname is not None:
            n += sum(
                1
                for m in self.surname.finditer(text)
                if not any(a <= m.start() < b for a, b in spans)
            )
        return n


def compile_ban(kind: str, text: str, initials: bool = True) -> Ban:
    """The matchers of a banned name or phrase (see the module docstring)."""
    if kind == "name":
        words = ban_key(text).split()
        original = [w for w in text.replace("’", "'").split()]
        while len(original) > len(words) and original[0].rstrip(".") in _TITLES:
            original = original[1:]
        if not words:
            raise SdfError(f"anti-universe name {text!r} is empty")
        body = _words_pattern(words)
        # a title before the name ("Dr. Sarah Chen") needs no pattern: the name is in it
        full = re.compile(rf"(?<![\w'’-]){body}(?![\w-])", re.I)
        initial = surname = None
        if len(words) >= 2:
            last = _words_pattern(words[-1:])
            if initials:
                first = re.escape(words[0][0])
                initial = re.compile(rf"(?<![\w'’.-]){first}\.\s*{last}(?![\w-])", re.I)
            cased = original[-1] if original else words[-1]
            surname = re.compile(rf"(?<![\w'’.-]){_words_pattern([cased])}(?![\w-])")
        return Ban(
            "name", text, full, initial, surname, needle=max(re.findall(r"\w+", words[-1]), key=len)
        )
    words = text.split()
    if not words:
        raise SdfError(f"anti-universe phrase {text!r} is empty")
    # any whitespace or punctuation between words: a flagged n-gram ("for anyone new to the
    # topic the background") matches the sentence it came from ("... topic, the background")
    body = _words_pattern(words, r"[\W_]+")
    head = r"(?<![\w'’])" if re.match(r"\w", words[0]) else ""
    tail = r"(?![\w'’])" if re.search(r"\w$", words[-1]) else ""
    needle = max(re.findall(r"\w+", text.lower()) or [""], key=len)
    return Ban("phrase", text, re.compile(head + body + tail, re.I), needle=needle)


def bans_of(universe: Universe, initials: bool = True) -> list[Ban]:
    """Every banned name and phrase of a universe, compiled (duplicates once)."""
    out: list[Ban] = []
    seen: set[tuple[str, str]] = set()
    for kind, items in (
        ("name", universe.anti_universe.names),
        ("phrase", universe.anti_universe.phrases),
    ):
        for item in items:
            key = (kind, ban_key(item))
            if key in seen or not key[1]:
                continue
            seen.add(key)
            out.append(compile_ban(kind, item, initials))
    return out


def violations(
    text: str, universe: Universe, fold_surnames: bool = True, initials: bool = True
) -> list[tuple[str, str, int]]:
    """(kind, banned text, mentions) of every ban of ``universe`` that ``text`` breaks."""
    out = []
    for ban in bans_of(universe, initials):
        n = ban.count(text, fold_surnames)
        if n:
            out.append((ban.kind, ban.text, n))
    return out


# ------------------------------------------------------------------------ universes
def load_configured(store: Store, patterns: list[str] | tuple[str, ...]) -> list[Universe]:
    """The universes of ``patterns`` (globs), else those ``sdf generate`` stored (newest
    version of each id)."""
    from sdfkit.audits.keywords import expand_paths
    from sdfkit.generate.universe import Universe, load_universes

    if patterns:
        return load_universes(list(expand_paths(list(patterns))))
    try:
        rows = store.query(
            "SELECT universe, universe_json FROM gen_universes ORDER BY stored_at"
        ).to_dicts()
    except Exception:  # no generation run yet: no table
        return []
    latest: dict[str, Universe] = {}
    for r in rows:
        latest[r["universe"]] = Universe.model_validate_json(r["universe_json"])
    return list(latest.values())


def _assign(docs: Any, universes: list[Universe]) -> dict[str, list[int]]:
    """doc_id -> indexes of the universes whose bans apply to it."""
    by_id = {u.id: i for i, u in enumerate(universes)}
    by_concept: dict[str, list[int]] = {}
    for i, u in enumerate(universes):
        by_concept.setdefault(u.concept, []).append(i)
    out: dict[str, list[int]] = {}
    for doc_id, uni, concept in docs.select("doc_id", "universe", "concept").iter_rows():
        if uni in by_id:
            out[doc_id] = [by_id[uni]]
        elif concept in by_concept:
            out[doc_id] = by_concept[concept]
    return out


# ------------------------------------------------------------------------ the audit
def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Find every document that carries a name or phrase its universe bans."""
    import polars as pl

    config = config or Config()
    t0 = time.perf_counter()
    universes = load_configured(store, config.universes)
    compiled = [bans_of(u, config.match_initials) for u in universes]
    where = (
        ""
        if config.include_excluded
        else f"WHERE doc_id NOT IN (SELECT doc_id FROM exclusions WHERE source <> '{SOURCE}')"
    )
    docs = store.query(
        "SELECT doc_id, any_value(universe) AS universe, any_value(concept) AS concept, "
        f"any_value(coalesce(doc_type, '')) AS doc_type FROM documents {where} GROUP BY doc_id"
    )
    assigned = _assign(docs, universes) if docs.height else {}
    doc_type_of = dict(docs.select("doc_id", "doc_type").iter_rows()) if docs.height else {}
    rows: list[dict[str, Any]] = []  # one per (document, universe, ban) violated
    if assigned and any(compiled):
        # Texts stream through in Arrow batches; each ban first looks for its rarest word
        # with a plain substring test (bench/bench_anti_universe.py: cheaper than an RE2
        # prefilter in DuckDB when many documents match), then runs its exact patterns.
        with store.connect() as con:
            con.register("_au_ids", pl.DataFrame({"doc_id": list(assigned)}).to_arrow())
            reader = con.sql(
                "SELECT doc_id, any_value(text) FROM documents_raw "
                "WHERE doc_id IN (SELECT doc_id FROM _au_ids) GROUP BY doc_id"
            ).to_arrow_reader(2048)
            for batch in reader:
                for doc_id, text in zip(
                    batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                ):
                    text = text or ""
                    lowered = text.lower()
                    for ui in assigned[doc_id]:
                        for ban in compiled[ui]:
                            n = ban.count(text, config.fold_surnames, lowered)
                            if n:
                                u = universes[ui]
                                rows.append(
                                    {
                                        "doc_id": doc_id,
                                        "universe": u.id,
                                        "concept": u.concept,
                                        "doc_type": doc_type_of.get(doc_id, ""),
                                        "kind": ban.kind,
                                        "text": ban.text,
                                        "mentions": n,
                                    }
                                )
    schema = {
        "doc_id": pl.String,
        "universe": pl.String,
        "concept": pl.String,
        "doc_type": pl.String,
        "kind": pl.String,
        "text": pl.String,
        "mentions": pl.Int64,
    }
    found = pl.DataFrame(rows, schema=schema).sort("universe", "kind", "text", "doc_id")
    violating = found["doc_id"].unique().to_list() if found.height else []
    figures: dict[str, Any] = {
        "documents": docs.height,
        "violating_documents": len(violating),
        "violating_share": len(violating) / docs.height if docs.height else 0.0,
        "universes": [],
    }
    items_tbl = (
        found.group_by("universe", "concept", "kind", "text")
        .agg(
            pl.col("mentions").sum(),
            pl.col("doc_id").n_unique().alias("documents"),
            pl.col("doc_id").unique().sort().head(config.examples).alias("doc_ids"),
        )
        .sort(["universe", "documents", "kind", "text"], descending=[False, True, False, False])
    )
    strata_tbl = (
        found.group_by("universe", "concept", "doc_type", "kind", "text")
        .agg(pl.col("mentions").sum(), pl.col("doc_id").n_unique().alias("documents"))
        .sort("universe", "concept", "doc_type", "kind", "text")
    )
    per_uni_docs = found.group_by("universe").agg(pl.col("doc_id").n_unique().alias("n"))
    n_of = dict(per_uni_docs.iter_rows()) if per_uni_docs.height else {}
    for u, bans in zip(universes, compiled, strict=True):
        items = []
        for r in items_tbl.filter(pl.col("universe") == u.id).iter_rows(named=True):
            strata = strata_tbl.filter(
                (pl.col("universe") == u.id)
                & (pl.col("kind") == r["kind"])
                & (pl.col("text") == r["text"])
            )
            items.append(
                {
                    "kind": r["kind"],
                    "text": r["text"],
                    "mentions": int(r["mentions"]),
                    "documents": int(r["documents"]),
                    "doc_ids": list(r["doc_ids"]),
                    "by_doc_type": {
                        s["doc_type"]: {"mentions": s["mentions"], "documents": s["documents"]}
                        for s in strata.iter_rows(named=True)
                    },
                }
            )
        figures["universes"].append(
            {
                "universe": u.id,
                "concept": u.concept,
                "banned_names": len([b for b in bans if b.kind == "name"]),
                "banned_phrases": len([b for b in bans if b.kind == "phrase"]),
                "violating_documents": int(n_of.get(u.id, 0)),
                "items": items,
            }
        )
    flags = []
    for entry in figures["universes"]:
        for item in entry["items"][:10]:
            flags.append(
                f"{entry['universe']}: banned {item['kind']} {item['text']!r} appears in "
                f"{item['documents']:,} documents ({item['mentions']:,} mentions)."
            )
    proposals = propose(store, universes, config)
    figures["proposed"] = proposals
    notes = [
        "Names match case-insensitively as whole words, with a title before or a possessive "
        "after ('Dr. SARAH CHEN's' is Sarah Chen)"
        + (", their first-name initial ('S. Chen')" if config.match_initials else "")
        + (
            ", and a lone capitalised surname in a document that names the person in full"
            if config.fold_surnames
            else ""
        )
        + "; phrases match case-insensitively with any whitespace between their words.",
        "A document answers to the bans of its own universe; one without a known universe "
        "(e.g. ingested) answers to every universe of its concept.",
        (
            "Audited: documents not excluded for another reason (near-duplicate, grade, "
            "replaced, yours)."
            if not config.include_excluded
            else "Audited: every document, excluded ones included."
        ),
        (
            f"Violating documents are excluded (source '{SOURCE}', reason '{REASON}'); "
            "selection leaves them out and `sdf generate --replace-excluded` replaces them."
            if config.write_exclusions
            else "Violating documents are listed only (write_exclusions is off)."
        ),
    ]
    if not universes:
        notes.append(
            "No universes: give universe files (universes: in sdfkit.yaml, or --universe), "
            "or generate first so their bans are stored."
        )
    tables = {
        "items": items_tbl.with_columns(pl.col("doc_ids").list.join(" ")),
        "strata": strata_tbl,
        "documents": found,
    }
    result = AuditResult(
        name="anti_universe",
        figures=figures,
        tables=tables,
        flags=flags,
        notes=notes,
        seconds=time.perf_counter() - t0,
    )
    if config.write_exclusions:
        result.writes = exclusion_writes(violating)
    return result


def finish(store: Store, result: AuditResult, config: Config) -> None:
    """In ``sdf report`` this audit runs before the names and n-gram audits (its exclusions
    are read by their ``where``): its proposals, drawn from their tables, are made again
    once those audits stored this report's."""
    from sdfkit.audits import save_figures

    result.figures["proposed"] = propose(store, load_configured(store, config.universes), config)
    save_figures(store, result)


def exclusion_writes(doc_ids: list[str]) -> list[CatalogWrite]:
    """Replace the anti-universe exclusions with these documents' (others are left alone)."""
    import pyarrow as pa

    incoming = pa.table({"doc_id": pa.array(sorted(set(doc_ids)), pa.string())})
    return [
        CatalogWrite(f"DELETE FROM exclusions WHERE source = '{SOURCE}'"),
        CatalogWrite(
            "INSERT INTO exclusions (doc_id, reason, source, created_at) "
            f"SELECT doc_id, ?, '{SOURCE}', ? FROM _au_excluded",
            [REASON, datetime.now(timezone.utc)],
            {"_au_excluded": incoming},
        ),
    ]


def summary(result: AuditResult) -> list[str]:
    """What ``sdf audit anti_universe`` prints."""
    f = result.figures
    out = [
        f"{f['violating_documents']:,} of {f['documents']:,} documents carry a name or phrase "
        "their universe bans"
    ]
    for entry in f["universes"]:
        out.append(
            f"  {entry['universe']} ({entry['concept']}): {entry['violating_documents']:,} "
            f"documents; {entry['banned_names']} names and {entry['banned_phrases']} phrases banned"
        )
        for item in entry["items"][:10]:
            out.append(
                f"    {item['kind']:6s} {item['text']!r}: {item['documents']:,} documents, "
                f"{item['mentions']:,} mentions (e.g. {', '.join(d[:12] for d in item['doc_ids'][:3])})"
            )
    out += proposal_lines(f.get("proposed") or [])
    return out


# ------------------------------------------------------------------------ proposals
def _universe_words(universe: Universe) -> str:
    """The universe's own text as lower-case words separated by single spaces: n-grams it
    contains are the message, not collapse."""
    parts = [universe.description, *universe.key_facts]
    parts += [v for kw in universe.required_keywords for v in kw.variants()]
    text = " ".join(parts).lower().replace("’", "'")
    # words as the n-gram audit cuts them: letters/digits, inner apostrophes kept ("act's")
    return " " + " ".join(re.findall(r"[^\W_]+(?:'[^\W_]+)*", text)) + " "


def propose(
    store: Store, universes: list[Universe], config: Config | None = None
) -> list[dict[str, Any]]:
    """Per universe, the names and phrases to ban next: names the names audit counts in at
    least ``propose_doc_share`` of the concept's eligible (not excluded) documents (or ``propose_mention_share`` of
    its name mentions), phrases the n-gram audit flags inside the concept; never one the
    universe already bans (compared as ``ban_key``), never an n-gram of the universe's own
    text. Reads the stored tables of the last names and n-gram audits."""
    config = config or Config()
    tables = set(_catalog_tables(store))
    names_rows: list[dict[str, Any]] = []
    if "audit_names_documents" in tables:
        names_rows = store.query(
            """WITH d AS (SELECT doc_id, any_value(concept) AS concept FROM documents
                          WHERE NOT excluded GROUP BY doc_id),
                    n AS (SELECT concept, name, sum(mentions) AS mentions,
                                 count(DISTINCT doc_id) AS documents
                          FROM audit_names_documents JOIN d USING (doc_id) GROUP BY ALL),
                    t AS (SELECT concept, sum(mentions) AS total FROM n GROUP BY concept),
                    c AS (SELECT concept, count(DISTINCT doc_id) AS docs
                          FROM audit_names_documents JOIN d USING (doc_id) GROUP BY concept)
               SELECT n.concept, name, mentions, documents, mentions / total AS share,
                      documents / greatest(c.docs, 1) AS doc_share
               FROM n JOIN t USING (concept) JOIN c USING (concept)
               ORDER BY concept, documents DESC, mentions DESC, name"""
        ).to_dicts()
        docs_per_concept = dict(
            store.query(
                "SELECT concept, count(DISTINCT doc_id) FROM documents WHERE NOT excluded "
                "GROUP BY concept"
            ).iter_rows()
        )
        for r in names_rows:  # share of the concept's documents, not of those with names
            r["doc_share"] = r["documents"] / max(docs_per_concept.get(r["concept"], 1), 1)
    phrase_rows: list[dict[str, Any]] = []
    if config.propose_phrases and "audit_ngrams_flagged" in tables:
        phrase_rows = store.query(
            'SELECT "group" AS concept, ngram, documents, share FROM audit_ngrams_flagged '
            "WHERE scope = 'concept' AND n >= ? ORDER BY concept, n DESC, share DESC, ngram",
            [config.propose_min_n],
        ).to_dicts()
    out = []
    for u in universes:
        banned = {ban_key(x) for x in u.anti_universe.names}
        banned_phrases = [ban_key(x) for x in u.anti_universe.phrases]
        own = _universe_words(u)
        names = []
        for r in names_rows:
            if r["concept"] != u.concept or ban_key(r["name"]) in banned:
                continue
            if (
                r["doc_share"] >= config.propose_doc_share
                or r["share"] >= config.propose_mention_share
            ):
                names.append(
                    {
                        "text": r["name"],
                        "mentions": int(r["mentions"]),
                        "documents": int(r["documents"]),
                        "doc_share": round(float(r["doc_share"]), 4),
                    }
                )
        phrases = merge_ngrams(
            [
                r
                for r in phrase_rows
                if r["concept"] == u.concept
                and f" {r['ngram'].replace('’', chr(39))} " not in own
                and not any(r["ngram"] in b or b in r["ngram"] for b in banned_phrases)
            ]
        )
        out.append(
            {
                "universe": u.id,
                "concept": u.concept,
                "source_path": u.source_path,
                "names": names[: config.propose_max],
                "phrases": phrases[: config.propose_max],
            }
        )
    return out


def merge_ngrams(rows: list[dict[str, Any]], overlap: int = 3) -> list[dict[str, Any]]:
    """Flagged n-grams (longest first) joined into phrases: "for anyone new to the" and
    "anyone new to the topic" overlap in four words and become "for anyone new to the
    topic"; an n-gram inside a phrase already made adds nothing. Each phrase keeps the
    largest document count of its pieces."""
    phrases: list[dict[str, Any]] = []
    for r in rows:
        words = r["ngram"].split()
        placed = False
        for p in phrases:
            have = p["words"]
            if " ".join(words) in " ".join(have):
                placed = True
            else:
                for k in range(min(len(have), len(words)) - 1, overlap - 1, -1):
                    if have[-k:] == words[:k]:
                        p["words"] = have + words[k:]
                        placed = True
                        break
                    if words[-k:] == have[:k]:
                        p["words"] = words + have[k:]
                        placed = True
                        break
            if placed:
                p["documents"] = max(p["documents"], int(r["documents"]))
                p["doc_share"] = max(p["doc_share"], float(r["share"]))
                break
        if not placed:
            phrases.append(
                {"words": words, "documents": int(r["documents"]), "doc_share": float(r["share"])}
            )
    # phrases grown from different pieces can overlap each other: join them too
    changed = True
    while changed:
        changed = False
        for a in phrases:
            for b in phrases:
                if a is b:
                    continue
                joined = _join(a["words"], b["words"], overlap)
                if joined is not None:
                    a["words"] = joined
                    a["documents"] = max(a["documents"], b["documents"])
                    a["doc_share"] = max(a["doc_share"], b["doc_share"])
                    phrases.remove(b)
                    changed = True
                    break
            if changed:
                break
    # a later merge can make an earlier phrase part of another
    out: list[dict[str, Any]] = []
    for p in sorted(phrases, key=lambda p: -len(p["words"])):
        text = " ".join(p["words"])
        if not any(text in o["text"] for o in out):
            out.append({"text": text, "documents": p["documents"], "doc_share": p["doc_share"]})
    return sorted(out, key=lambda p: (-p["documents"], p["text"]))


def _join(a: list[str], b: list[str], overlap: int) -> list[str] | None:
    """``a`` then ``b`` when b starts with at least ``overlap`` words that end a (or b lies
    inside a), else None."""
    if " ".join(b) in " ".join(a):
        return a
    for k in range(min(len(a), len(b)) - 1, overlap - 1, -1):
        if a[-k:] == b[:k]:
            return a + b[k:]
    return None


def _catalog_tables(store: Store) -> list[str]:
    return store.query("SELECT table_name FROM duckdb_tables()")["table_name"].to_list()


def proposal_lines(proposals: list[dict[str, Any]]) -> list[str]:
    """Proposals as lines for the terminal."""
    if not proposals:
        return []
    out = ["proposed anti-universe additions (never ones already banned):"]
    for p in proposals:
        if not p["names"] and not p["phrases"]:
            out.append(f"  {p['universe']}: nothing new to ban")
            continue
        out.append(f"  {p['universe']} ({p.get('source_path') or 'stored universe'}):")
        for n in p["names"]:
            out.append(
                f"    name   {n['text']}  # {n['documents']:,} documents "
                f"({n['doc_share']:.1%}), {n['mentions']:,} mentions"
            )
        for ph in p["phrases"]:
            out.append(
                f"    phrase {ph['text']!r}  # {ph['documents']:,} documents ({ph['doc_share']:.1%})"
            )
    return out


# ------------------------------------------------------------------------ writing bans
_KEY_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<key>[A-Za-z_][\w-]*)[ \t]*:(?P<rest>.*)$")


def _yaml_scalar(text: str) -> str:
    """A YAML scalar for a list item: plain when safe, else double-quoted."""
    import yaml

    plain = text
    try:
        if yaml.safe_load(f"- {plain}") == [text] and not re.search(
            r"[#:]\s|^[-?!&*|>%@`'\"]", plain
        ):
            return plain
    except yaml.YAMLError:
        pass
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def add_bans(text: str, names: list[str], phrases: list[str], source: str = "<universe>") -> str:
    """The text of a universe file with ``names`` and ``phrases`` appended to its
    ``anti_universe:`` lists, every other line (comments, order, quoting) untouched.

    Block lists get new ``- item`` lines after their last item; a flow list
    (``names: [A, B]``) is extended in place; missing keys are added. The result is parsed
    again and must hold exactly the old bans plus the new ones, else nothing is changed and
    an error says why."""
    from sdfkit.generate.universe import FRONT_MATTER, parse_universe

    before = parse_universe(text, source)
    m = FRONT_MATTER.match(text)
    assert m is not None  # parse_universe checked it
    head_start, head_end = m.span(1)
    lines = text[head_start:head_end].split("\n")
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = [ln.rstrip("\r") for ln in lines]
    new_names = [
        x for x in names if ban_key(x) not in {ban_key(n) for n in before.anti_universe.names}
    ]
    new_phrases = [
        x for x in phrases if ban_key(x) not in {ban_key(p) for p in before.anti_universe.phrases}
    ]
    if not new_names and not new_phrases:
        return text
    # find the anti_universe block (top level)
    au = next(
        (
            i
            for i, ln in enumerate(lines)
            if (k := _KEY_RE.match(ln)) and not k["indent"] and k["key"] == "anti_universe"
        ),
        None,
    )
    if au is None:
        lines.append("anti_universe:")
        au = len(lines) - 1
    rest = _KEY_RE.match(lines[au])["rest"].strip()  # type: ignore[index]
    if rest and not rest.startswith("#"):
        raise SdfError(
            f"{source}: anti_universe is written inline ({rest[:40]!r}); write it as a block "
            "(anti_universe:, then names: and phrases: below) to have bans added"
        )
    end = len(lines)  # the block ends at the next top-level key
    for j in range(au + 1, len(lines)):
        if (
            lines[j].strip()
            and not lines[j].startswith((" ", "\t"))
            and not lines[j].startswith("#")
        ):
            end = j
            break
    child_indent = "  "
    for j in range(au + 1, end):
        k = _KEY_RE.match(lines[j])
        if k and k["indent"]:
            child_indent = k["indent"]
            break
    for key, items in (("names", new_names), ("phrases", new_phrases)):
        if not items:
            continue
        pos = next(
            (
                j
                for j in range(au + 1, end)
                if (k := _KEY_RE.match(lines[j]))
                and k["indent"] == child_indent
                and k["key"] == key
            ),
            None,
        )
        if pos is None:
            block = [f"{child_indent}{key}:"] + [
                f"{child_indent}  - {_yaml_scalar(x)}" for x in items
            ]
            lines[end:end] = block
            end += len(block)
            continue
        rest = _KEY_RE.match(lines[pos])["rest"]  # type: ignore[index]
        value, _, comment = rest.partition(" #")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            inner = value[1:-1].strip()
            added = ", ".join(_yaml_scalar(x) for x in items)
            joined = f"{inner}, {added}" if inner else added
            lines[pos] = f"{child_indent}{key}: [{joined}]" + (f" #{comment}" if comment else "")
            continue
        if value:
            raise SdfError(f"{source}: anti_universe.{key} is not a list ({value[:40]!r})")
        last = pos
        item_indent = child_indent + "  "
        for j in range(pos + 1, end):
            stripped = lines[j].strip()
            if not stripped or stripped.startswith("#"):
                continue
            indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
            if stripped.startswith("- ") and len(indent) >= len(child_indent):
                last, item_indent = j, indent
            elif len(indent) > len(item_indent):  # continuation of an item
                last = j
            else:
                break
        block = [f"{item_indent}- {_yaml_scalar(x)}" for x in items]
        lines[last + 1 : last + 1] = block
        end += len(block)
    new_text = text[:head_start] + nl.join(lines) + text[head_end:]
    after = parse_universe(new_text, source)
    want_names = [*before.anti_universe.names, *new_names]
    want_phrases = [*before.anti_universe.phrases, *new_phrases]
    if after.anti_universe.names != want_names or after.anti_universe.phrases != want_phrases:
        raise SdfError(
            f"{source}: could not add the bans without changing other fields; add them by hand"
        )
    if after.model_dump(exclude={"anti_universe"}) != before.model_dump(exclude={"anti_universe"}):
        raise SdfError(f"{source}: adding the bans would change other fields; add them by hand")
    return new_text


@dataclass
class FileChange:
    path: Path
    before: str
    after: str

    @property
    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=str(self.path),
                tofile=str(self.path),
            )
        )


def plan_apply(proposals: list[dict[str, Any]]) -> list[FileChange]:
    """The universe files the proposals would change, with their new text (nothing
    written). A proposal without a file (a universe known only from a generation run) is an
    error naming it."""
    changes = []
    for p in proposals:
        if not p["names"] and not p["phrases"]:
            continue
        path = p.get("source_path")
        if not path or not Path(path).is_file():
            raise SdfError(
                f"universe {p['universe']!r}: no universe file to write to ({path or 'none'}); "
                "pass the files with --universe"
            )
        before = Path(path).read_text(encoding="utf-8")
        after = add_bans(
            before, [n["text"] for n in p["names"]], [x["text"] for x in p["phrases"]], path
        )
        if after != before:
            changes.append(FileChange(Path(path), before, after))
    return changes


def write_changes(changes: list[FileChange]) -> None:
    """Write each changed universe file atomically (temporary file, then rename)."""
    from sdfkit.store.durable import write_text_atomic

    for c in changes:
        if c.path.read_text(encoding="utf-8") != c.before:
            raise SdfError(f"{c.path}: changed on disk since the proposal was made; run again")
        write_text_atomic(c.path, c.after)


__all__ = [
    "REASON",
    "SOURCE",
    "Ban",
    "Config",
    "add_bans",
    "ban_key",
    "bans_of",
    "compile_ban",
    "plan_apply",
    "propose",
    "run",
    "violations",
    "write_changes",
]


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command  # noqa: E402 - with the code using it
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "anti_universe"
TITLE = "Anti-universe compliance"
COMMAND = Command(
    help="Documents carrying a name or phrase their own universe bans; excludes them.",
    universe=True,
)


@dataclass
class Gates(Checked):
    """The anti-universe audit's threshold of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: Documents (not excluded for another reason) carrying a name or phrase their own
    #: universe bans. On by default: the anti-universe is a rule.
    max_anti_universe_documents: int | None = field(default=0, metadata=at_least(0))


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """Documents that carry a ban of their own universe; none audited (an empty corpus, or
    every document excluded for another reason) is NOT RUN, not 0 violating documents."""
    from sdfkit.report.verdicts import max_verdict, unmeasured

    limit = thresholds.max_anti_universe_documents
    if limit is None:
        return []
    au = report.get(JSON_KEY)
    early = unmeasured(au, "max_anti_universe_documents", "anti_universe", limit, "corpus")
    if early is not None:
        return [early]
    worst = max(au.get("universes") or [{}], key=lambda u: u.get("violating_documents", 0))
    items = worst.get("items") or []
    detail = (
        f"e.g. {worst.get('universe')}: {items[0]['kind']} {items[0]['text']!r}" if items else ""
    )
    return [
        max_verdict(
            "max_anti_universe_documents",
            "corpus",
            au.get("violating_documents"),
            float(limit),
            detail,
        )
    ]


def section(f: dict[str, Any]) -> str:
    """The anti_universe audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_bars
    from sdfkit.report.html import esc, fmt_num, html_table

    out = [
        f'<p class="summary-line"><b>{fmt_num(f.get("violating_documents"))}</b> of '
        f"{fmt_num(f.get('documents'))} documents carry a name or phrase their own universe bans "
        "(excluded from selection)</p>"
    ]
    for entry in f.get("universes") or []:
        items = entry.get("items") or []
        out.append(
            f"<h3>{esc(entry.get('universe'))} ({esc(entry.get('concept'))}): "
            f"{fmt_num(entry.get('violating_documents'))} violating documents</h3>"
        )
        if not items:
            out.append('<p class="empty">no banned name or phrase found</p>')
            continue
        out.append(
            svg_bars(
                [(f"{i['kind']}: {i['text']}", float(i["documents"])) for i in items[:20]],
                title=f"documents carrying a ban of {entry.get('universe')}",
            )
        )
        rows = [
            {
                **{k: i[k] for k in ("kind", "text", "mentions", "documents")},
                "doc_ids": ", ".join(d[:12] for d in i.get("doc_ids") or []),
                "by doc type": "; ".join(
                    f"{dt or '(none)'}: {v['documents']}"
                    for dt, v in (i.get("by_doc_type") or {}).items()
                ),
            }
            for i in items
        ]
        out.append(html_table(rows, limit=40))
    proposed = [p for p in f.get("proposed") or [] if p.get("names") or p.get("phrases")]
    if proposed:
        out.append(
            "<h3>Proposed anti-universe additions</h3><p class=notes>Names and phrases to ban "
            "next (never ones already banned); <code>sdf audit names --propose --apply</code> "
            "writes them into the universe files.</p>"
        )
        for p in proposed:
            rows = [{"kind": "name", **n} for n in p["names"]] + [
                {"kind": "phrase", **x} for x in p["phrases"]
            ]
            out.append(f"<h4>{esc(p['universe'])}</h4>" + html_table(rows))
    return "".join(out)
