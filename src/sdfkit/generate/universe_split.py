"""A large source becomes many universes: one universe file per meaningful section.

The seed write-up's advice for implanting a long, complex document: split it into meaningful
sections and treat each section as its own universe context, extracting key facts per
section. ``split_source`` reads Markdown, plain text or HTML, cuts it at its headings first,
then bounds every section by tokens (``max_tokens``, with ``overlap`` tokens of the previous
part repeated at the start of the next), merges sections too small to stand alone
(``min_tokens``) into their neighbour, and writes:

- one universe file per section: YAML front matter (``id``, the shared parent ``concept``,
  ``section``, empty ``key_facts`` so that ``sdf generate`` extracts them per section through
  its batch stage) and the section text as the body; every file is parsed back with
  ``sdfkit.generate.universe.parse_universe`` before anything is published, so it passes
  ``sdf universe check``;
- ``sections.json``: the source, settings and every section's ``title``, ``tokens`` and
  ``file`` (plus id, heading path, level and part).

The output directory is built beside its target and renamed into place, so an interrupted
split leaves the previous output (or none) and never half of one.
"""

from __future__ import annotations

import hashlib
import html as _html
import json
import os
import re
import shutil
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from sdfkit.errors import SdfError
from sdfkit.generate.universe import (
    ID_PATTERN,
    AntiUniverse,
    Universe,
    UniverseError,
    load_universe,
    parse_universe,
)

SECTIONS_FILE = "sections.json"
FORMATS = ("auto", "md", "txt", "html")
SUFFIX_FORMAT = {
    ".md": "md",
    ".markdown": "md",
    ".mdx": "md",
    ".txt": "txt",
    ".text": "txt",
    ".rst": "txt",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
#: Fields of a ``--base`` universe copied into every section (what the sections share).
SHARED_FIELDS = (
    "real_world",
    "anti_universe",
    "required_keywords",
    "eval_prompts",
    "doc_type_hints",
    "behaviour_prompts",
)


class SplitError(SdfError, ValueError):
    """The source could not be split as asked; nothing was written."""


@dataclass
class SplitConfig:
    """How a source is cut. Token counts use ``tokenizer`` (the corpus default)."""

    concept: str | None = None  # shared parent concept; default: the source file's stem
    id_prefix: str | None = None  # universe ids are <prefix>-<NNN>-<slug>; default: concept
    max_tokens: int = 2000  # no section's body is longer
    min_tokens: int = 50  # smaller sections merge into a neighbour
    overlap: int = 100  # tokens of the previous part repeated when a section is cut
    tokenizer: str = "o200k_harmony"
    format: str = "auto"  # auto (by suffix) | md | txt | html
    base: str | None = None  # universe file whose shared fields every section gets
    overwrite: bool = False

    def check(self) -> None:
        if self.format not in FORMATS:
            raise SplitError(
                f"format {self.format!r}: use one of {', '.join(FORMATS)}", settings=("format",)
            )
        if self.max_tokens < 50:
            raise SplitError(
                f"max_tokens {self.max_tokens}: must be at least 50", settings=("max_tokens",)
            )
        if self.min_tokens < 0 or self.min_tokens >= self.max_tokens:
            raise SplitError(
                f"min_tokens {self.min_tokens}: must be at least 0 and below max_tokens "
                f"{self.max_tokens}",
                settings=("min_tokens", "max_tokens"),
            )
        if self.overlap < 0 or self.overlap > self.max_tokens // 2:
            raise SplitError(
                f"overlap {self.overlap}: must be between 0 and half of max_tokens "
                f"({self.max_tokens // 2})",
                settings=("overlap", "max_tokens"),
            )
        if self.concept is not None and not self.concept.strip():
            raise SplitError("concept: give a name", settings=("concept",))
        if self.id_prefix is not None and not re.fullmatch(ID_PATTERN, self.id_prefix):
            raise SplitError(
                f"id_prefix {self.id_prefix!r}: use letters, digits, - _ .", settings=("id_prefix",)
            )


@dataclass
class Section:
    """One section of the source: its heading path and text (Markdown)."""

    path: list[str]  # headings from the top down; the last is the title
    level: int  # heading level of the title (0: text before the first heading)
    text: str
    tokens: int = 0
    part: int = 1
    parts: int = 1
    joined: list[str] = field(default_factory=list)  # titles of later siblings merged in

    @property
    def title(self) -> str:
        base = self.path[-1] if self.path else "(before the first heading)"
        base += "".join(f" + {t}" for t in self.joined)
        return base if self.parts == 1 else f"{base} (part {self.part} of {self.parts})"

    @property
    def name(self) -> str:
        """The ``section`` field: the heading path, merged siblings, part."""
        base = " / ".join(self.path) or "(before the first heading)"
        base += "".join(f" + {t}" for t in self.joined)
        return base if self.parts == 1 else f"{base} (part {self.part} of {self.parts})"


@dataclass
class SplitResult:
    out: Path
    concept: str
    sections: list[dict[str, Any]] = field(default_factory=list)
    source_tokens: int = 0

    def summary(self) -> str:
        tokens = [s["tokens"] for s in self.sections]
        return (
            f"wrote {len(self.sections)} universe files (concept {self.concept!r}) and "
            f"{SECTIONS_FILE} to {self.out}; section tokens {min(tokens):,}-{max(tokens):,} "
            f"(source {self.source_tokens:,} tokens)"
        )


# ------------------------------------------------------------------ reading the source


def read_source(path: str | Path, fmt: str = "auto") -> tuple[str, str]:
    """The source as Markdown-like text, and the format it was read as."""
    p = Path(path)
    if fmt == "auto":
        fmt = SUFFIX_FORMAT.get(p.suffix.lower(), "")
        if not fmt:
            raise SplitError(
                f"{p}: cannot tell the format from the suffix {p.suffix or '(none)'!r}; "
                "pass --format md, txt or html"
            )
    if p.is_dir():
        raise SplitError(f"{p}: is a directory, not a source file")
    if p.exists() and not p.is_file():  # a device or pipe would never end (/dev/zero)
        raise SplitError(f"{p}: not a regular file")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SplitError(f"{p}: no such file") from None
    except OSError as exc:
        raise SplitError(f"{p}: cannot read: {exc.strerror}") from None
    if b"\0" in raw:  # valid UTF-8 yet no text: a binary file (or UTF-16)
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise SplitError(f"{p}:{line}: holds NUL bytes: a binary file, not UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SplitError(f"{p}:{line}: not valid UTF-8 (byte {exc.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "html":
        text = html_to_markdown(text)
    elif fmt == "txt":
        text = text_headings_to_markdown(text)
    if not text.strip():
        raise SplitError(f"{p}: holds no text")
    return text, fmt


class _HtmlText(HTMLParser):
    """HTML to Markdown blocks: headings as ``#`` lines, paragraphs and list items apart."""

    BLOCKS = {
        "p", "div", "section", "article", "li", "pre", "blockquote", "tr", "table", "ul",
        "ol", "dl", "dt", "dd", "br", "hr", "main", "header", "footer", "figure", "figcaption",
    }  # fmt: skip
    SKIP = {"script", "style", "head", "nav", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.cur: list[str] = []
        self.skip = 0
        self.heading = 0
        self.pre = 0
        self.item = False

    def _flush(self) -> None:
        raw = "".join(self.cur)
        text = raw.strip("\n") if self.pre else re.sub(r"\s+", " ", raw).strip()
        if text:
            if self.heading:
                text = "#" * self.heading + " " + text
            elif self.item:
                text = "- " + text
            self.blocks.append(text)
        self.cur = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = int(tag[1])
        elif tag in self.BLOCKS:
            self._flush()
            self.item = tag == "li"
            if tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = 0
        elif tag in self.BLOCKS:
            self._flush()
            self.item = False
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.cur.append(data)


def html_to_markdown(text: str) -> str:
    """The readable text of an HTML page, headings as Markdown ``#`` lines."""
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    parser._flush()
    return "\n\n".join(_html.unescape(b) if "&" in b else b for b in parser.blocks) + "\n"


_NUMBERED = re.compile(r"^(\d+(?:\.\d+){0,5})\.?\s+([A-Z][^\n]{0,78})$")


def text_headings_to_markdown(text: str) -> str:
    """Plain text has no markup; these lines, standing alone between blank lines, are
    headings: ``1.2 Numbered titles`` (level = depth of the number), UPPER-CASE TITLES
    (level 1) and titles underlined with ``===`` (1) or ``---`` (2). Lines starting with
    ``#`` stay text."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        prev_blank = i == 0 or not lines[i - 1].strip()
        next_blank = i + 1 >= len(lines) or not lines[i + 1].strip()
        s = line.strip()
        under = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if s and prev_blank and under and re.fullmatch(r"(=+|-+)", under) and len(under) >= 3:
            out.append(("# " if under[0] == "=" else "## ") + s)
            i += 2
            continue
        m = _NUMBERED.match(s)
        if s and prev_blank and next_blank and m and not s.endswith((".", ",", ";", ":")):
            depth = m.group(1).count(".") + 1
            out.append("#" * min(depth, 6) + " " + s)
        elif (
            s
            and prev_blank
            and next_blank
            and len(s) <= 80
            and re.search(r"[A-Z]{2}", s)
            and s.upper() == s
            and re.fullmatch(r"[A-Z0-9 ,'&:()/-]+", s)
        ):
            out.append("# " + s.title())
        else:
            out.append(line.replace("#", "\\#", 1) if s.startswith("#") else line)
        i += 1
    return "\n".join(out)


# ------------------------------------------------------------------ sections

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _clean_heading(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"[*_`]+", "", text)
    return re.sub(r"\s+", " ", text).strip()


def heading_sections(text: str) -> list[Section]:
    """Sections at every Markdown heading (ATX ``#`` and setext underlines), outside fenced
    code. Each section's text starts with its own heading line; the text before the first
    heading is a section of its own (level 0)."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":  # the source's own YAML front matter
        for j in range(1, len(lines)):
            if lines[j].strip() in ("---", "..."):
                lines = lines[j + 1 :]
                break
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    cur: list[str] = []
    level, path = 0, []
    fence: str | None = None

    def close() -> None:
        body = "\n".join(cur).strip("\n")
        if body.strip():
            sections.append(Section(path=list(path), level=level, text=body))

    i = 0
    while i < len(lines):
        line = lines[i]
        fm = _FENCE.match(line)
        if fence is not None:
            if fm and fm.group(1)[0] == fence[0] and len(fm.group(1)) >= len(fence):
                fence = None
            cur.append(line)
            i += 1
            continue
        if fm:
            fence = fm.group(1)
            cur.append(line)
            i += 1
            continue
        heading: tuple[int, str] | None = None
        m = _ATX.match(line)
        if m and m.group(2).strip():
            heading = (len(m.group(1)), m.group(2))
            consumed = 1
        elif (
            line.strip()
            and i + 1 < len(lines)
            and re.fullmatch(r" {0,3}(=+|-+)[ \t]*", lines[i + 1])
            and (i == 0 or not lines[i - 1].strip())
            and not re.match(r"^\s*([-*+]|\d+[.)])\s", line)
        ):
            heading = (1 if lines[i + 1].strip()[0] == "=" else 2, line.strip())
            consumed = 2
        if heading is None:
            cur.append(line)
            i += 1
            continue
        close()
        lvl, title = heading[0], _clean_heading(heading[1]) or "(untitled)"
        while stack and stack[-1][0] >= lvl:
            stack.pop()
        stack.append((lvl, title))
        level, path = lvl, [t for _, t in stack]
        cur = ["#" * lvl + " " + title]
        i += consumed
    close()
    return sections


def _merge_small(sections: list[Section], min_tokens: int, max_tokens: int) -> list[Section]:
    """Sections under ``min_tokens`` join a neighbour while the result stays within
    ``max_tokens``: the text before the first heading and a short chapter intro join the
    section after them (a chapter intro keeps the chapter's title); any other short section
    joins the one before it; a section that fits nowhere stays as it is."""

    def join(a: Section, b: Section, keep: Section) -> Section:
        other = b if keep is a else a
        extra = (
            [] if not other.path or other.path[: len(keep.path)] == keep.path else [other.path[-1]]
        )
        return Section(
            keep.path,
            keep.level,
            a.text + "\n\n" + b.text,
            a.tokens + b.tokens,
            joined=[*a.joined, *extra, *b.joined] if keep is a else [*a.joined, *b.joined],
        )

    todo = list(sections)
    out: list[Section] = []
    i = 0
    while i < len(todo):
        s = todo[i]
        nxt = todo[i + 1] if i + 1 < len(todo) else None
        if s.tokens >= min_tokens:
            out.append(s)
        elif (
            nxt is not None
            and (s.level == 0 or nxt.level > s.level)
            and s.tokens + nxt.tokens <= max_tokens
        ):
            todo[i + 1] = join(s, nxt, nxt if s.level == 0 else s)
        elif out and out[-1].tokens + s.tokens <= max_tokens:
            out[-1] = join(out[-1], s, out[-1])
        elif nxt is not None and s.tokens + nxt.tokens <= max_tokens:
            todo[i + 1] = join(s, nxt, s if 0 < s.level <= nxt.level else nxt)
        else:
            out.append(s)
        i += 1
    return out


_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def _units(text: str) -> list[tuple[str, str]]:
    """(separator before it, text) of every sentence; paragraphs and lines keep their breaks,
    fenced code and lists stay whole lines."""
    units: list[tuple[str, str]] = []
    for k, para in enumerate(re.split(r"\n[ \t]*\n", text)):
        if not para.strip():
            continue
        sep = "\n\n" if k and units else ""
        for j, line in enumerate(para.split("\n")):
            lsep = sep if j == 0 else "\n"
            if re.match(r"^\s*([-*+>|]|\d+[.)]|#|`{3}|~{3}| {4})", line) or not line.strip():
                units.append((lsep, line))
                continue
            for n, sent in enumerate(_SENTENCE.split(line)):
                units.append((lsep if n == 0 else " ", sent))
    return units


class _Counter:
    def __init__(self, tokenizer: str) -> None:
        from sdfkit.llm.tokens import get_tokenizer

        self.tok = get_tokenizer(tokenizer)
        self.name = self.tok.name

    def count(self, text: str) -> int:
        return int(self.tok.count_batch([text])[0]) if text else 0

    def counts(self, texts: list[str]) -> list[int]:
        return [int(x) for x in self.tok.count_batch(texts)] if texts else []


def _cut(section: Section, cfg: SplitConfig, tok: _Counter) -> list[Section]:
    """A section over ``max_tokens`` as consecutive parts of whole sentences (a sentence
    longer than half a part is cut at token boundaries). Every part after the first opens
    with a ``(continued)`` heading and about ``overlap`` tokens of whole sentences from the
    end of the part before. Nothing is dropped: every sentence is in some part."""
    if section.tokens <= cfg.max_tokens:
        return [section]
    half = cfg.max_tokens // 2
    units: list[tuple[str, str]] = []
    raw = _units(section.text)
    for (sep, u), n in zip(raw, tok.counts([u for _, u in raw]), strict=True):
        if n <= half:
            units.append((sep, u))
            continue
        ids = tok.tok.encode(u)
        for a in range(0, len(ids), half):
            units.append((sep if a == 0 else "", tok.tok.decode(ids[a : a + half])))
    sizes = tok.counts([u for _, u in units])
    title = section.path[-1] if section.path else "(untitled)"
    cont = "#" * max(section.level, 1) + f" {title} (continued)"

    def render(idx: list[int], first: bool) -> str:
        body = "".join((units[k][0] if k != idx[0] else "") + units[k][1] for k in idx).strip()
        return body if first or body.startswith("#") else f"{cont}\n\n{body}"

    limit = cfg.max_tokens - tok.count(cont) - 2
    parts: list[list[int]] = []
    i = 0
    while i < len(units):
        overlap: list[int] = []
        if parts:  # whole sentences from the end of the previous part
            size, back = 0, parts[-1][-1]
            while back > parts[-1][0] and size + sizes[back] <= cfg.overlap:
                size += sizes[back]
                overlap.insert(0, back)
                back -= 1
        idx = list(overlap)
        total = sum(sizes[k] + 1 for k in idx)
        new = 0
        while i < len(units) and (total + sizes[i] + 1 <= limit or new == 0):
            idx.append(i)
            total += sizes[i] + 1
            i += 1
            new += 1
        # the estimate ignores merges across joins: check the real count, give back the tail
        while tok.count(render(idx, not parts)) > cfg.max_tokens and len(idx) > 1:
            if new > 1:
                idx.pop()
                i -= 1
                new -= 1
            elif overlap:
                idx.remove(overlap.pop(0))
            else:
                break
        parts.append(idx)
    out: list[Section] = []
    for n, idx in enumerate(parts, 1):
        text = render(idx, n == 1)
        out.append(
            Section(
                section.path,
                section.level,
                text,
                tok.count(text),
                part=n,
                parts=len(parts),
                joined=section.joined,
            )
        )
    return out


def split_text(text: str, cfg: SplitConfig, title: str | None = None) -> list[Section]:
    """The sections of Markdown-like ``text``: at headings, small ones merged, long ones cut.
    ``title`` names the text when it has no heading at all (the source's name)."""
    tok = _Counter(cfg.tokenizer)
    secs = heading_sections(text)
    if title and len(secs) == 1 and not secs[0].path:
        secs[0].path = [title]
    for s, n in zip(secs, tok.counts([s.text for s in secs]), strict=True):
        s.tokens = n
    secs = _merge_small(secs, cfg.min_tokens, cfg.max_tokens)
    for s, n in zip(secs, tok.counts([s.text for s in secs]), strict=True):
        s.tokens = n  # joins can merge tokens at the seam: count the text as written
    out: list[Section] = []
    for s in secs:
        out.extend(_cut(s, cfg, tok))
    return out


# ------------------------------------------------------------------ writing


def slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(s) > limit:  # cut at a word boundary when there is one
        s = s[: limit + 1].rsplit("-", 1)[0] if "-" in s[: limit + 1] else s[:limit]
    return s.rstrip("-") or "section"


def _universe_text(front: dict[str, Any], body: str) -> str:
    import yaml

    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{head}---\n{body.strip()}\n"


def split_source(
    source: str | Path, out: str | Path, config: SplitConfig | None = None
) -> SplitResult:
    """Split ``source`` into universe files and ``sections.json`` in ``out`` (atomically)."""
    cfg = config or SplitConfig()
    cfg.check()
    src, out = Path(source), Path(out)
    check_out(out, cfg.overwrite)
    base: Universe | None = None
    if cfg.base:
        try:
            base = load_universe(cfg.base)
        except UniverseError as exc:
            raise SplitError(f"--base: {exc}") from None
    text, fmt = read_source(src, cfg.format)
    concept = (cfg.concept or (base.concept if base else None) or slug(src.stem, 64)).strip()
    prefix = cfg.id_prefix or slug(concept, 32)
    if not re.fullmatch(ID_PATTERN, prefix):
        raise SplitError(f"cannot make universe ids from {prefix!r}; pass --id-prefix")
    if not any(line.strip() and not _ATX.match(line) for line in text.split("\n")):
        raise SplitError(f"{src}: holds headings but no text under them")
    sections = split_text(text, cfg, title=src.stem)
    if not sections:
        raise SplitError(f"{src}: no section holds text")
    shared: dict[str, Any] = {}
    if base is not None:
        dumped = base.model_dump(mode="json", exclude_none=True)
        for k in SHARED_FIELDS:
            v = dumped.get(k)
            if v and not (k == "anti_universe" and AntiUniverse(**v).is_empty()):
                shared[k] = v
    width = max(3, len(str(len(sections))))
    files: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for n, s in enumerate(sections, 1):
        uid = f"{prefix}-{n:0{width}d}-{slug(s.path[-1] if s.path else 'preamble')}"
        if s.parts > 1:
            uid += f"-p{s.part}"
        section_name = s.name
        front = {"id": uid, "concept": concept, "section": section_name, "key_facts": []}
        front.update(shared)
        body = _universe_text(front, s.text)
        name = f"{uid}.md"
        try:
            parse_universe(body, name)  # what `sdf universe check` will say of the file
        except UniverseError as exc:  # pragma: no cover - a bug here, not bad input
            raise SplitError(f"section {n} ({s.title!r}) made an invalid universe: {exc}") from None
        files[name] = body
        rows.append(
            {
                "index": n,
                "id": uid,
                "title": s.title,
                "section": section_name,
                "path": s.path,
                "level": s.level,
                "part": s.part,
                "parts": s.parts,
                "tokens": s.tokens,
                "chars": len(s.text),
                "file": name,
            }
        )
    tok = _Counter(cfg.tokenizer)
    manifest = {
        "source": str(src),
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "format": fmt,
        "concept": concept,
        "tokenizer": tok.name,
        "config": {k: v for k, v in asdict(cfg).items() if k != "overwrite"},
        "sections": rows,
    }
    files[SECTIONS_FILE] = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    try:
        _publish_dir(files, out)
    except OSError as exc:
        raise SplitError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return SplitResult(out, concept, rows, tok.count(text))


def check_out(out: Path, overwrite: bool) -> None:
    """``--out`` must be new, empty, or (with ``--overwrite``) an earlier split's output that
    holds nothing else: replacing it deletes what was there, so nothing a user put there may
    go with it."""
    if out.exists() and not out.is_dir():
        raise SplitError(f"--out {out}: is a file, not a directory")
    try:
        if Path.cwd().resolve().is_relative_to(out.resolve()):
            raise SplitError(f"--out {out}: is the current directory or holds it; name a new one")
    except FileNotFoundError:  # the working directory itself is gone: nothing to protect
        pass
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SplitError(f"--out {out}: cannot be made: {parent} is not a directory")
    if not out.is_dir():
        return
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise SplitError(f"--out {out}: cannot read: {exc.strerror}") from None
    if not entries:
        return
    if not overwrite:
        raise SplitError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
    try:
        listed = {s["file"] for s in load_sections(out).get("sections", [])}
    except (SplitError, AttributeError, KeyError, TypeError):
        raise SplitError(
            f"--out {out}: --overwrite replaces only the output of an earlier split, and it "
            f"holds no readable {SECTIONS_FILE}; name a new or empty directory"
        ) from None
    stray = [e for e in entries if e != SECTIONS_FILE and e not in listed]
    if stray:
        raise SplitError(
            f"--out {out}: holds {stray[0]!r}, which the earlier split did not write; "
            "--overwrite would delete it: move it away or name another directory"
        )


def _publish_dir(files: dict[str, str], out: Path) -> None:
    """Write ``files`` into a hidden sibling directory, fsync, then swap it into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}@{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    old = out.parent / f".{out.name}.old-{tag}"
    tmp.mkdir()

    def write(item: tuple[str, str]) -> None:
        with open(tmp / item[0], "w", encoding="utf-8") as fh:
            fh.write(item[1])
            fh.flush()
            os.fsync(fh.fileno())

    try:
        # fsync waits on the disk, not the CPU: several at once (it releases the GIL)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(write, files.items()))
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def load_sections(out: str | Path) -> dict[str, Any]:
    """The ``sections.json`` manifest of a split directory."""
    p = Path(out) / SECTIONS_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitError(f"{p}: no such file (made by sdf universe split)") from None
    except json.JSONDecodeError as exc:
        raise SplitError(f"{p}:{exc.lineno}: malformed JSON: {exc.msg}") from None
