"""Prompt templates: where they are found, how they render, and the hash that versions them.

Templates are Jinja2 files ``NAME.j2`` looked up in ``$SDF_PROMPTS``, ``./prompts``, then the
copies shipped with sdfkit (first hit wins). A request's ``prompt_hash`` is the content hash of
the templates that rendered it. Generation, grading and every evaluation render through this
module, so none of them has to import another stage for it. While a run's recorded templates
are pinned (``sdfkit.llm.pins``), those texts are rendered and hashed instead of the files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdfkit.errors import SdfError

PACKAGED_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


class PromptError(SdfError):
    """A prompt template cannot be found, read, compiled or rendered; the message names it."""


def prompt_dirs() -> list[Path]:
    """Where prompt templates are looked up, first hit wins: ``$SDF_PROMPTS`` (which must be
    an existing directory: a typo would silently fall back to the packaged prompts),
    ``./prompts``, then sdfkit's own."""
    dirs = []
    env = os.environ.get("SDF_PROMPTS", "").strip()
    if env:
        d = Path(env)
        if not d.exists():
            raise PromptError(f"SDF_PROMPTS={env!r}: no such directory")
        if not d.is_dir():
            raise PromptError(f"SDF_PROMPTS={env!r}: not a directory (a folder of NAME.j2)")
        dirs.append(d)
    return [*dirs, Path("prompts"), PACKAGED_PROMPTS]


def find_prompt(name: str) -> Path:
    """The template file of a prompt: $SDF_PROMPTS, ./prompts, then sdfkit's own."""
    return _find_prompt(name, os.environ.get("SDF_PROMPTS"), str(Path.cwd()))


@lru_cache(maxsize=128)
def _find_prompt(name: str, env: str | None, cwd: str) -> Path:
    for d in prompt_dirs():
        p = d / f"{name}.j2"
        if p.is_file():
            return p
    raise PromptError(
        f"no prompt template {name}.j2 in " + ", ".join(str(d) for d in prompt_dirs())
    )


@lru_cache(maxsize=64)
def _compile(path: str, mtime: float) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"{path}: cannot read the prompt template: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PromptError(f"{path}: the prompt template is not UTF-8 text") from None
    return _compile_text(text, path)


@lru_cache(maxsize=64)
def _compile_text(text: str, where: str) -> Any:
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
    )
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"{where}:{exc.lineno}: template error: {exc.message}") from None


#: Template texts a run recorded when it started (``sdfkit.llm.pins``): rendered and hashed
#: instead of the files while set, so a resumed run asks exactly what it asked before.
_PINNED: ContextVar[dict[str, str] | None] = ContextVar("sdf_pinned_prompts", default=None)


@contextmanager
def pinned_prompts(texts: dict[str, str]) -> Iterator[None]:
    token = _PINNED.set(dict(texts))
    try:
        yield
    finally:
        _PINNED.reset(token)


def render_template(name: str, **ctx: Any) -> str:
    import jinja2

    pinned = (_PINNED.get() or {}).get(name)
    if pinned is not None:
        where = f"{name}.j2 (as recorded by the run)"
        tmpl = _compile_text(pinned, where)
    else:
        p = find_prompt(name)
        where, tmpl = str(p), _compile(str(p), p.stat().st_mtime)
    try:
        return tmpl.render(**ctx).strip()
    except jinja2.UndefinedError as exc:
        raise PromptError(f"{where}: {exc.message}") from None


def prompt_hash(*names: str) -> str:
    """Content hash of the templates that render a request (first 16 hex digits)."""
    pinned = _PINNED.get() or {}
    if any(n in pinned for n in names):
        h = hashlib.sha256()
        for n in names:
            data = pinned[n].encode() if n in pinned else find_prompt(n).read_bytes()
            h.update(n.encode() + b"\0" + data + b"\0")
        return h.hexdigest()[:16]
    paths = [find_prompt(n) for n in names]
    return _hash_files(tuple(names), tuple((str(p), p.stat().st_mtime_ns) for p in paths))


@lru_cache(maxsize=128)
def _hash_files(names: tuple[str, ...], files: tuple[tuple[str, int], ...]) -> str:
    h = hashlib.sha256()
    for name, (path, _) in zip(names, files, strict=True):
        h.update(name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- answers
def tagged(text: str | None, tag: str) -> list[str]:
    """Items inside <tag>...</tag>; falls back to bulleted/numbered lines."""
    if not text:
        return []
    items = [
        re.sub(r"\s+", " ", m).strip() for m in re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    ]
    if not items:
        items = [
            re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip()
            for line in text.splitlines()
            if re.match(r"^\s*(?:[-*•]|\d+[.)])\s+\S", line)
        ]
    return list(dict.fromkeys(i for i in items if i))
