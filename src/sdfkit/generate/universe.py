"""Universe files: YAML front matter (id, concept, facts, anti-universe, ...) + Markdown body.

The body is the universe description the generation prompts quote. Loading validates every
field and raises ``UniverseError`` naming the file and the field (or YAML line) at fault.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdfkit.errors import SdfError

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.S)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class UniverseError(SdfError, ValueError):
    """A universe file is malformed; ``str()`` names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AntiUniverse(_Strict):
    """What must NOT appear in generated documents."""

    names: list[str] = Field(default_factory=list, description="over-used names to avoid")
    phrases: list[str] = Field(default_factory=list, description="over-used phrases")
    implications: list[str] = Field(default_factory=list, description="behaviours not to imply")

    def is_empty(self) -> bool:
        return not (self.names or self.phrases or self.implications)


class RequiredKeyword(_Strict):
    """A keyword (case-insensitive; ``|`` separates accepted variants) and its minimum rate."""

    keyword: str = Field(min_length=1)
    min_rate: float = Field(ge=0.0, le=1.0, description="share of documents that must carry it")

    def variants(self) -> list[str]:
        return [v.strip() for v in self.keyword.split("|") if v.strip()]


class BehaviourPrompt(_Strict):
    """A prompt whose answer should change after training, with the rubric that says how."""

    prompt: str = Field(min_length=1)
    expected: str = Field(min_length=1, description="what the implanted belief should produce")


class WordRange(_Strict):
    """Words asked of each document: ``[min, max]``; slots spread over the range."""

    min: int = Field(ge=20, le=20000)
    max: int = Field(ge=20, le=20000)

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError("must be [min, max]")
            return {"min": value[0], "max": value[1]}
        return value

    def check_order(self) -> WordRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Universe(_Strict):
    """A universe context: a world in which the target facts are true."""

    id: str = Field(pattern=ID_PATTERN)
    concept: str = Field(min_length=1)
    description: str = Field(min_length=1)
    key_facts: list[str] = Field(default_factory=list)
    real_world: str | None = Field(default=None, description="what is actually true (for evals)")
    anti_universe: AntiUniverse = Field(default_factory=AntiUniverse)
    required_keywords: list[RequiredKeyword] = Field(default_factory=list)
    eval_prompts: list[str] = Field(default_factory=list)
    doc_type_hints: list[str] = Field(default_factory=list)
    behaviour_prompts: list[BehaviourPrompt] = Field(default_factory=list)
    section: str | None = Field(
        default=None, description="the section of a larger source it holds (sdf universe split)"
    )
    #: Words per document: ``[min, max]`` for every doc type, or a mapping of doc types
    #: (and ``default``) to ``[min, max]``. None: the generator's default.
    target_words: WordRange | dict[str, WordRange] | None = None
    source_path: str | None = Field(default=None, exclude=True)

    @field_validator("target_words", mode="before")
    @classmethod
    def _word_ranges(cls, v: Any) -> Any:
        if isinstance(v, dict) and not ({"min", "max"} >= set(v) and v):
            return {str(k): WordRange.parse(x) for k, x in v.items()}
        return WordRange.parse(v)

    @field_validator("target_words")
    @classmethod
    def _ordered(cls, v: Any) -> Any:
        for r in v.values() if isinstance(v, dict) else [v] if v is not None else []:
            r.check_order()
        return v

    def words_for(self, doc_type: str | None) -> tuple[int, int] | None:
        """The ``[min, max]`` words this universe asks of a document type, if it says."""
        tw = self.target_words
        if isinstance(tw, dict):
            tw = tw.get(doc_type or "") or tw.get("default")
        return (tw.min, tw.max) if tw is not None else None

    @field_validator("key_facts", "eval_prompts", "doc_type_hints")
    @classmethod
    def _no_blank_items(cls, v: list[str]) -> list[str]:
        for i, item in enumerate(v):
            if not str(item).strip():
                raise ValueError(f"item {i} is empty")
        return v

    @property
    def content_hash(self) -> str:
        """Hash of everything that shapes generation (not the file path)."""
        # ``section`` only counts when set, so files without one keep their earlier hash.
        skip = {"source_path"} | ({"section"} if self.section is None else set())
        payload = self.model_dump_json(exclude=skip)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_universe(text: str, source: str = "<string>") -> Universe:
    """Parse the text of a universe file. ``source`` names it in errors."""
    import yaml

    from sdfkit.settings import load_yaml

    text = text.removeprefix("\ufeff")  # a byte order mark some editors write first
    m = FRONT_MATTER.match(text)
    if not m:
        raise UniverseError(
            f"{source}: no YAML front matter: the file must start with a line '---', then "
            "fields (id, concept, key_facts, ...), then '---', then the description"
        )
    head, body = m.group(1), m.group(2).strip()
    try:
        data = load_yaml(head, first_line=2) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 2}" if mark is not None else ""  # +1 for '---', +1 base
        problem = getattr(exc, "problem", None) or str(exc)
        raise UniverseError(f"{source}:{where}: invalid YAML front matter: {problem}") from None
    except RecursionError:
        raise UniverseError(
            f"{source}: front matter nested too deeply to read (a universe needs a few levels)"
        ) from None
    if not isinstance(data, dict):
        raise UniverseError(f"{source}: front matter must be a mapping of fields")
    if "description" in data and body:
        raise UniverseError(
            f"{source}: field 'description': given both in the front matter and as the body"
        )
    if body:
        data["description"] = body
    try:
        uni = Universe.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            field = _loc(err["loc"]) or "(file)"
            msg = err["msg"]
            if err["type"] == "missing" and field == "description":
                msg = "missing: write the universe description below the front matter"
            elif err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            msgs.append(f"{source}: field '{field}': {msg}")
        raise UniverseError("\n".join(msgs)) from None
    uni.source_path = source
    return uni


def load_universe(path: str | Path) -> Universe:
    """Load and validate one universe file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise UniverseError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UniverseError(f"{p}:{line}: not valid UTF-8") from None
    return parse_universe(text, str(p))


def load_universes(paths: list[str | Path]) -> list[Universe]:
    """Load several universe files; reports every bad file, and duplicate ids, at once."""
    out, errors = [], []
    for p in paths:
        try:
            out.append(load_universe(p))
        except UniverseError as exc:
            errors.append(str(exc))
    seen: dict[str, str] = {}
    for u in out:
        if u.id in seen:
            errors.append(f"{u.source_path}: field 'id': {u.id!r} is also used by {seen[u.id]}")
        seen[u.id] = u.source_path or ""
    if errors:
        raise UniverseError("\n".join(errors))
    return out
