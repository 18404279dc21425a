"""Real text for the benchmarks: this machine's man pages and Debian package documentation.

``real_records(n)`` cuts man pages (roff requests and font escapes stripped), Debian
changelogs, copyright files and READMEs into documents of at most ``max_chars`` characters
(at paragraph breaks) and returns ``n`` of them, shuffled under ``seed``: technical prose full
of command names, section titles, imperative changelog lines ("Remove ...", "Fix ...") and
real people's names (authors, maintainers, copyright holders). ``concept`` is the source
kind, ``doc_type`` the man section or the documentation file's kind.
"""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path
from typing import Any

_ROFF_REQUEST = re.compile(r"^[.'].*$", re.M)
_ROFF_ESCAPE = re.compile(r"\\(?:f[BIRP0-9]|f\(..|f\[[^]]*\]|\(..|\*\(..|\*.|[-&e|^0 ])")


def _read(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError):
        return None
    return raw.decode("utf-8", "replace")


def _pieces(text: str, max_chars: int) -> list[str]:
    out, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        if cur and len(cur) + len(para) > max_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para[:max_chars]
    if cur:
        out.append(cur)
    return [p.strip() for p in out if len(p.split()) >= 60]


def real_records(n: int, seed: int = 0, max_chars: int = 12_000) -> list[dict[str, Any]]:
    """Up to ``n`` distinct real-text documents (see the module docstring)."""
    sources: list[tuple[Path, str, str]] = []
    for p in sorted(Path("/usr/share/man").glob("man[1-8]/*.gz")):
        sources.append((p, "man", p.parent.name))
    doc = Path("/usr/share/doc")
    for pattern, kind in (
        ("*/changelog.Debian.gz", "changelog"),
        ("*/copyright", "copyright"),
        ("*/README*", "readme"),
    ):
        sources += [(p, "package-doc", kind) for p in sorted(doc.glob(pattern)) if p.is_file()]
    rng = random.Random(seed)
    rng.shuffle(sources)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, concept, doc_type in sources:
        if len(records) >= n:
            break
        text = _read(path)
        if text is None:
            continue
        if concept == "man":
            text = _ROFF_ESCAPE.sub("", _ROFF_REQUEST.sub("", text))
        for piece in _pieces(text, max_chars):
            if piece not in seen and len(records) < n:
                seen.add(piece)
                records.append({"text": piece, "concept": concept, "doc_type": doc_type})
    return records


def write_corpus(store: Any, n: int, seed: int = 0) -> int:
    """Write ``real_records(n)`` into ``store``; the number of documents written."""
    from sdfkit.store.ingest import build_documents

    records = real_records(n, seed)
    for i in range(0, len(records), 500):
        store.append("documents_raw", build_documents(records[i : i + 500]))
    return len(records)
