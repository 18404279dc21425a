"""``sdf report`` / ``make report``: run every audit, write reports/report.html and report.json.

``build(store, config)`` runs each audit of ``sdfkit.audits.AUDITS`` (any can be skipped),
stores its tables in the corpus (``audit_<name>_<table>``), evaluates the thresholds of
``sdf check`` on the figures, and writes:

- ``report.json``: every figure, keyed as ``JSON_KEYS`` says (``shape``, ``ngrams``,
  ``names``, ``near_duplicates``, ``diversity``, ``keywords``), plus ``audits`` (status,
  seconds, flags, notes per audit) and ``checks`` (the verdicts);
- ``report.html``: one self-contained page (inline CSS and SVG, no scripts, no network) that
  opens with the verdicts and flags, then each audit's plots and tables. It is rendered from
  the JSON alone (``render_html(report)``), so the two never disagree.

Both files are written to a temporary name and renamed into place.

The project file (``sdfkit.yaml`` in the working directory, or ``--config FILE``) sets the
defaults of a report and of ``sdf check``::

    universes: [examples/universes/*.md]   # for the keyword audit
    report: {html: reports/report.html, json: reports/report.json, skip: [diversity]}
    audits:                                # fields of each audit's Config
      diversity: {max_seq_length: 256}
    check: {max_name_share: 0.05, ...}     # see sdfkit.report.check

Relative paths in the file (universes, report.html, report.json, and the default report
paths when the file does not set them) are relative to the file's folder: the folder holding
the project file is the project, wherever the command runs from. Paths typed on the command
line (``--json``, ``--html``, ``--universe``, ``--report``) are relative to the working
directory, as a shell user expects. Every setting is checked when the file is loaded
(``sdfkit.settings``), so a bad value stops the command before any audit runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.audits import AUDITS, JSON_KEYS, AuditResult, save
from sdfkit.report.charts import svg_bars, svg_heatmap, svg_histogram, svg_ranges
from sdfkit.report.check import ConfigError, Thresholds, Verdict, evaluate
from sdfkit.report.html import CSS, esc, fmt_num, fmt_pct, html_table, write_atomic
from sdfkit.settings import check_fields

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

DEFAULT_CONFIG_FILE = "sdfkit.yaml"
TOP_LEVEL_KEYS = ("universes", "report", "audits", "check")


#: Report parts beyond the audits, by module name, in page order: each module has
#: ``add(store, data)`` (its report.json keys), ``present(report)``, ``section(report)`` (HTML),
#: ``ANCHOR``, ``LABEL`` and ``verdicts(report, thresholds)`` (its gates of ``sdf check``).
#: By name, so the report imports none of them at module level.
PARTS: dict[str, str] = {"evaluation": "sdfkit.evaluate.report_part"}


def report_parts() -> list[Any]:
    """The modules of ``PARTS``, in order."""
    import importlib

    return [importlib.import_module(m) for m in PARTS.values()]


@dataclass
class ReportConfig:
    """What to run and where to write; ``load_config`` fills it from the project file."""

    html: Path = Path("reports/report.html")
    json: Path = Path("reports/report.json")
    universes: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    #: Per-audit settings: audit name -> {Config field: value}.
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    engine: str | None = None
    #: The project file these settings came from (None: defaults only).
    source: str | None = None


def load_config(path: str | Path | None = None) -> ReportConfig:
    """Settings from ``path``, else ``./sdfkit.yaml`` when present, else the defaults."""
    import yaml

    if path is None:
        if not Path(DEFAULT_CONFIG_FILE).is_file():
            return ReportConfig()
        path = DEFAULT_CONFIG_FILE
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:" if mark is not None else ""
        raise ConfigError(f"{p}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the project file must be a mapping")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{p}: {key}: unknown key (known: {', '.join(TOP_LEVEL_KEYS)})")
    cfg = ReportConfig(source=str(p))
    base = p.parent
    cfg.html, cfg.json = base / cfg.html, base / cfg.json
    universes = data.get("universes") or []
    if isinstance(universes, str):
        universes = [universes]
    if not isinstance(universes, list) or not all(isinstance(u, str) for u in universes):
        raise ConfigError(f"{p}: universes: must be a list of file names or globs")
    cfg.universes = [u if Path(u).is_absolute() else str(base / u) for u in universes]
    rep = data.get("report") or {}
    if not isinstance(rep, dict):
        raise ConfigError(f"{p}: report: must be a mapping (html, json, skip)")
    for key, value in rep.items():
        if key in ("html", "json"):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{p}: report.{key}: must be a file path, got {value!r}")
            setattr(cfg, key, _relative_to(base, value))
        elif key == "skip":
            cfg.skip = _audit_names(value, f"{p}: report.skip")
        else:
            raise ConfigError(f"{p}: report.{key}: unknown key (known: html, json, skip)")
    audits = data.get("audits") or {}
    if not isinstance(audits, dict):
        raise ConfigError(f"{p}: audits: must map audit names to their settings")
    for name, settings in audits.items():
        if name not in AUDITS:
            raise ConfigError(f"{p}: audits.{name}: unknown audit (known: {', '.join(AUDITS)})")
        if not isinstance(settings, dict):
            raise ConfigError(f"{p}: audits.{name}: must be a mapping of settings")
    cfg.audits = {name: dict(settings) for name, settings in audits.items()}
    for name in cfg.audits:  # every setting checked now, not when its audit's turn comes
        try:
            cfg.audits[name] = _checked_settings(name, cfg.audits[name], f"{p}: audits.{name}")
            audit_config(name, None, cfg)
        except ModuleNotFoundError:
            pass  # `sdf report` reports the audit "not available" when its turn comes
    cfg.thresholds = Thresholds.from_mapping(data.get("check"), str(p))
    return cfg


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def set_audit_settings(
    config: ReportConfig, name: str, settings: dict[str, Any], origin: str = "command line"
) -> None:
    """Lay ``settings`` (e.g. ``--set FIELD=VALUE``) over the project file's settings of one
    audit, checked first so an error names where the bad value came from."""
    checked = _checked_settings(name, settings, f"{origin}: audits.{name}")
    config.audits[name] = {**(config.audits.get(name) or {}), **checked}
    audit_config(name, None, config)


def _checked_settings(name: str, settings: dict[str, Any], where: str) -> dict[str, Any]:
    from sdfkit.audits import get

    return check_fields(get(name).Config, settings, where)


def _audit_names(value: Any, where: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        raise ConfigError(f"{where}: must be a list of audit names")
    for n in names:
        if n not in AUDITS:
            raise ConfigError(f"{where}: {n!r} is not an audit (known: {', '.join(AUDITS)})")
    return list(names)


def audit_config(name: str, module: Any, config: ReportConfig) -> Any:
    """The audit's own Config with the project's settings (and universes) applied; a bad
    setting is a ``ConfigError`` naming the project file and the key."""
    from sdfkit.audits import get

    cls = (module or get(name)).Config  # module None: look the audit up by name
    where = config.source or "settings"
    settings = dict(config.audits.get(name) or {})
    known = {f.name for f in dataclasses.fields(cls)}
    if "universes" in known and "universes" not in settings:
        settings["universes"] = list(config.universes)
    checked = check_fields(cls, settings, f"{where}: audits.{name}")
    try:
        return cls(**checked)
    except ConfigError as exc:  # a check across fields (the Config names the keys)
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class Report:
    """What ``build`` produced: the JSON document, the audit results, the files written."""

    data: dict[str, Any]
    results: dict[str, AuditResult]
    verdicts: list[Verdict]
    html_path: Path | None
    json_path: Path | None


def run_audit(store: Store, name: str, config: ReportConfig) -> AuditResult:
    """Run and save one audit with the project's settings."""
    from sdfkit.audits import get

    module = get(name)
    result = module.run(store, audit_config(name, module, config), engine=config.engine)
    save(store, result)
    return result


def build(
    store: Store,
    config: ReportConfig | None = None,
    only: list[str] | None = None,
    write: bool = True,
) -> Report:
    """Run every audit (except ``config.skip``; or just ``only``), write the JSON and HTML."""
    from sdfkit import __version__
    from sdfkit.engine.local import check_environment

    config = config or load_config()
    wanted = [n for n in AUDITS if n not in config.skip and (only is None or n in only)]
    # A bad setting or environment variable stops the report before the first audit,
    # not midway through (nor as the same failure repeated by every audit).
    for name in wanted:
        try:
            audit_config(name, None, config)
        except ModuleNotFoundError:
            pass  # the audit's own turn reports it "not available" without losing the others
    if wanted:
        check_environment(config.engine)
    data: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sdfkit_version": __version__,
        "corpus": str(store.root.resolve()),
        "config": config.source,
        "audits": {},
    }
    results: dict[str, AuditResult] = {}
    for name in AUDITS:
        entry: dict[str, Any] = {"status": "skipped", "seconds": 0.0, "flags": [], "notes": []}
        if name in wanted:
            started = time.perf_counter()
            try:
                result = run_audit(store, name, config)
            except ModuleNotFoundError as exc:
                entry.update(status="not available", error=str(exc))
            except ConfigError:
                raise
            except Exception as exc:  # one broken audit must not lose the others' findings
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            else:
                results[name] = result
                data[JSON_KEYS[name]] = result.figures
                entry.update(status="ok", flags=result.flags, notes=result.notes)
            entry["seconds"] = round(time.perf_counter() - started, 2)
        data["audits"][name] = entry
    for part in report_parts():
        part.add(store, data)
    verdicts = evaluate(data, config.thresholds).verdicts
    data["thresholds"] = config.thresholds.to_dict()
    data["checks"] = [dataclasses.asdict(v) for v in verdicts]
    html_path = json_path = None
    if write:
        text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
        json_path = write_atomic(config.json, text)
        html_path = write_atomic(config.html, render_html(data))
    return Report(data, results, verdicts, html_path, json_path)


def _finite(value: Any) -> Any:
    """NaN/inf become null: report.json must parse in strict JSON readers (browsers, jq)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime,)):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def verdict_errors(report: dict[str, Any]) -> list[str]:
    """Audits that failed to run, as sentences (the CLI prints them)."""
    return [
        f"audit {name} {e['status']}: {e.get('error', '')}"
        for name, e in report.get("audits", {}).items()
        if e.get("status") in ("failed", "not available")
    ]


# ====================================================================== HTML
SECTION_TITLES = {
    "shape": "Shape: documents, tokens and lengths",
    "ngrams": "N-gram collapse",
    "names": "Name collapse",
    "dedup": "Near-duplicates",
    "diversity": "Embedding diversity",
    "keywords": "Required keywords",
    "anti_universe": "Anti-universe compliance",
}


def render_html(report: dict[str, Any]) -> str:
    """The whole page, from a report.json document."""
    audits = report.get("audits", {})
    checks = report.get("checks", [])
    fails = [c for c in checks if c["status"] != "pass"]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sdfkit corpus report</title><style>",
        CSS,
        "</style></head><body><main>",
        "<h1>Corpus report</h1>",
        f'<p class="meta">corpus {esc(report.get("corpus", "?"))} · generated '
        f"{esc(report.get('generated_at', '?'))} · sdfkit {esc(report.get('sdfkit_version', '?'))}"
        f" · thresholds from {esc(report.get('config') or 'defaults (no project file)')}</p>",
        "<nav>"
        + '<a href="#summary">Summary</a>'
        + "".join(f'<a href="#{n}">{esc(SECTION_TITLES[n].split(":")[0])}</a>' for n in AUDITS)
        + "".join(
            f'<a href="#{p.ANCHOR}">{esc(p.LABEL)}</a>' for p in report_parts() if p.present(report)
        )
        + "</nav>",
    ]
    # ---- summary verdicts first
    parts.append('<section id="summary"><h2>Summary</h2>')
    if not checks:
        parts.append(
            '<p class="summary-line">No thresholds are configured: add a <code>check:</code> '
            "block to sdfkit.yaml (see README) to get pass/fail verdicts.</p>"
        )
    else:
        word = "All checks pass" if not fails else f"{len(fails)} of {len(checks)} checks fail"
        badge = "pass" if not fails else "fail"
        parts.append(f'<p class="summary-line"><span class="badge {badge}">{word}</span></p>')
        rows = []
        for c in checks:
            cls = {"pass": "pass", "fail": "fail"}.get(c["status"], "notrun")
            op = "≥" if c["check"].startswith("min_") else "≤"
            rows.append(
                f'<tr><td><span class="badge {cls}">{esc(c["status"].upper())}</span></td>'
                f"<td>{esc(c['check'])}</td><td>{esc(c['subject'])}</td>"
                f'<td class="n">{esc(fmt_num(c["figure"]))}</td>'
                f'<td class="n">{op} {esc(fmt_num(c["threshold"]))}</td><td>{esc(c["detail"])}</td></tr>'
            )
        parts.append(
            "<table><thead><tr><th>verdict</th><th>check</th><th>subject</th><th>figure</th>"
            "<th>threshold</th><th>detail</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    parts.append(
        "<h3>Audits</h3><table><thead><tr><th>audit</th><th>status</th>"
        "<th>seconds</th><th>findings</th></tr></thead><tbody>"
    )
    for name in AUDITS:
        e = audits.get(name, {"status": "not run"})
        status = e.get("status", "not run")
        detail = e.get("error") or f"{len(e.get('flags', []))} flag(s)"
        parts.append(
            f'<tr><td><a href="#{name}">{esc(name)}</a></td>'
            f'<td class="status-{esc(status.replace(" ", "-"))}">{esc(status)}</td>'
            f'<td class="n">{esc(fmt_num(e.get("seconds")))}</td><td>{esc(detail)}</td></tr>'
        )
    parts.append("</tbody></table>")
    if any(audits.get(n, {}).get("flags") for n in AUDITS):
        parts.append("<h3>Flags</h3>")
    for n in AUDITS:
        flags = audits.get(n, {}).get("flags") or []
        if not flags:
            continue
        parts.append("<ul class=flags>")
        parts += [f"<li><b>{esc(n)}</b>: {esc(f)}</li>" for f in flags[:6]]
        parts.append("</ul>")
        if len(flags) > 6:
            parts.append(
                f"<details><summary>{len(flags) - 6} more {esc(n)} flags</summary><ul class=flags>"
                + "".join(f"<li>{esc(f)}</li>" for f in flags[6:200])
                + "</ul></details>"
            )
    parts.append("</section>")

    renderers = {
        "shape": _section_shape,
        "ngrams": _section_ngrams,
        "names": _section_names,
        "dedup": _section_dedup,
        "diversity": _section_diversity,
        "keywords": _section_keywords,
        "anti_universe": _section_anti_universe,
    }
    for name in AUDITS:
        e = audits.get(name, {"status": "not run"})
        parts.append(f'<section id="{name}"><h2>{esc(SECTION_TITLES[name])}</h2>')
        fig = report.get(JSON_KEYS[name])
        if e.get("status") != "ok" or not isinstance(fig, dict):
            why = e.get("error") or ""
            parts.append(
                f'<p class="empty">not run ({esc(e.get("status", "not run"))}) {esc(why)}</p>'
            )
        else:
            try:
                parts.append(renderers[name](fig))
            except Exception as exc:  # a figure of an unexpected shape: show it raw, not crash
                parts.append(
                    f'<p class="empty">could not draw this section ({esc(type(exc).__name__)}: '
                    f"{esc(exc)}); the figures are below.</p>"
                )
            if e.get("notes"):
                parts.append("<h3>How this was computed</h3><ul class=notes>")
                parts += [f"<li>{esc(n)}</li>" for n in e["notes"]]
                parts.append("</ul>")
            parts.append(
                "<details><summary>All figures (JSON)</summary><pre>"
                + esc(json.dumps(fig, indent=1, default=str)[:200_000])
                + "</pre></details>"
            )
        parts.append("</section>")
    for part in report_parts():
        if part.present(report):
            parts.append(part.section(report))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _section_shape(f: dict[str, Any]) -> str:
    out = [
        f'<p class="summary-line">{fmt_num(f.get("documents"))} documents, '
        f"{fmt_num(f.get('tokens'))} tokens"
        + (
            f"; grader pass rate {fmt_pct(f['grade_pass_rate'])} of {fmt_num(f['graded'])} graded"
            if f.get("graded")
            else "; no grader verdicts yet"
        )
        + "</p>"
    ]
    concepts = [{"concept": c} | v for c, v in (f.get("per_concept") or {}).items()]
    out.append("<h3>Per concept</h3>" + html_table(concepts))
    strata = f.get("per_concept_doc_type") or []
    # doc types down (there are many), concepts across (there are few)
    rows = sorted({r["doc_type"] for r in strata})
    cols = sorted({r["concept"] for r in strata})
    out.append("<h3>Documents per concept × doc type</h3>")
    out.append(
        svg_heatmap(
            rows,
            cols,
            {(r["doc_type"], r["concept"]): r["documents"] for r in strata},
            title="documents per doc type and concept",
        )
    )
    out.append("<h3>Median tokens per concept × doc type</h3>")
    out.append(
        svg_heatmap(
            rows,
            cols,
            {(r["doc_type"], r["concept"]): r["median_tokens"] for r in strata},
            title="median tokens per doc type and concept",
        )
    )
    if any(r.get("graded") for r in strata):
        out.append("<h3>Grader pass rate per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                rows,
                cols,
                {(r["doc_type"], r["concept"]): r["pass_rate"] for r in strata if r.get("graded")},
                fmt=fmt_pct,
                vmin=0,
                vmax=1,
                title="grader pass rate",
            )
        )
    hist = f.get("length_histogram") or {}
    out.append("<h3>Length distribution (documents per 250 tokens)</h3>")
    out.append(
        svg_histogram(
            {c: [(b["bucket_start"], b["documents"]) for b in bins] for c, bins in hist.items()},
            250,
            "tokens per document",
            title="length histogram",
        )
    )
    vs = [r for r in f.get("length_vs_target") or [] if r.get("with_target")]
    if vs:
        out.append(
            "<h3>Length achieved against the target, per concept × doc type (words)</h3>"
            + html_table(
                vs,
                [
                    "concept",
                    "doc_type",
                    "documents",
                    "target_min",
                    "target_max",
                    "median_target_words",
                    "median_words",
                    "median_achieved_ratio",
                    "median_tokens",
                ],  # fmt: skip
                limit=80,
            )
        )
    out.append("<h3>Strata</h3>" + html_table(strata, limit=80))
    return "".join(out)


def _section_ngrams(f: dict[str, Any]) -> str:
    out = []
    shares = f.get("max_doc_share") or {}
    if shares:
        out.append("<h3>Largest share of documents carrying one n-gram, per n</h3>")
        out.append(
            svg_bars(
                [(f"{n}-grams", float(v)) for n, v in shares.items() if v is not None],
                fmt=fmt_pct,
                max_value=1.0,
                title="max document share per n",
            )
        )
    for n, rows in (f.get("top") or {}).items():
        rows = list(rows)[:15]
        out.append(f"<h3>Top {n}-grams by documents</h3>")
        out.append(
            svg_bars(
                [(str(r.get("ngram")), float(r.get("documents", 0))) for r in rows],
                title=f"top {n}-grams",
            )
        )
        out.append(
            html_table(
                rows,
                [c for c in ("ngram", "count", "documents", "share") if rows and c in rows[0]],
                limit=15,
            )
        )
    flagged = f.get("flagged") or []
    if flagged:
        out.append("<h3>Flagged n-grams</h3>" + html_table(flagged, limit=40))
    return "".join(out)


def _section_names(f: dict[str, Any]) -> str:
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
            f"<b>{fmt_pct(_first_number(share))}</b>{extra}</p>"
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


def _first_number(value: Any) -> float | None:
    from sdfkit.report.check import _as_float

    return _as_float(value)


def _section_dedup(f: dict[str, Any]) -> str:
    out = []
    clusters = f.get("clusters") or []
    out.append(
        f'<p class="summary-line">Near-duplicate fraction: <b>{fmt_pct(f.get("duplicate_fraction"))}'
        f"</b> · {len(clusters):,} clusters</p>"
    )
    sizes: dict[int, int] = {}
    for c in clusters:
        sizes[len(c)] = sizes.get(len(c), 0) + 1
    if sizes:
        out.append("<h3>Clusters by size</h3>")
        out.append(
            svg_bars(
                [(f"{s} documents", float(k)) for s, k in sorted(sizes.items())],
                title="cluster sizes",
            )
        )
    pairs = list(f.get("pairs") or [])
    if pairs:
        out.append("<h3>Example pairs</h3>" + html_table(pairs, limit=25))
    if f.get("exact_duplicate_rows") is not None:
        out.append(
            f"<h3>Exact duplicates: {fmt_num(f['exact_duplicate_rows'])} arrivals not stored "
            "again</h3><p class=notes>Every arrival of a text already in the store (or twice "
            "in one input) is in table <code>duplicates</code> with its provenance.</p>"
        )
        for key, label in (
            ("exact_duplicates_by_run", "run"),
            ("exact_duplicates_by_concept", "concept"),
        ):
            counts = f.get(key) or {}
            if counts:
                out.append(html_table([{label: k, "duplicates": v} for k, v in counts.items()]))
    return "".join(out)


def _section_diversity(f: dict[str, Any]) -> str:
    out = []
    per = f.get("per_concept") or {}
    rows = [
        {
            "concept": c,
            "documents": v["documents"],
            "mean_pairwise_cosine": v["mean_pairwise_cosine"],
            "effective_documents": v["effective_documents"],
            "nn_cosine_median": v["nn_cosine"].get("p50"),
            "nn_cosine_p95": v["nn_cosine"].get("p95"),
        }
        for c, v in per.items()
    ]
    out.append("<h3>Per concept</h3>" + html_table(rows))
    by_type = [
        {
            "doc_type": t,
            "documents": v["documents"],
            "mean_pairwise_cosine": v["mean_pairwise_cosine"],
            "effective_documents": v["effective_documents"],
            "nn_cosine_median": v["nn_cosine"].get("p50"),
        }
        for t, v in (f.get("per_doc_type") or {}).items()
    ]
    if by_type:
        out.append("<h3>Per doc type, across concepts</h3>" + html_table(by_type))
    out.append("<h3>Mean pairwise cosine per concept</h3>")
    out.append(
        svg_bars(
            [(r["concept"], r["mean_pairwise_cosine"]) for r in rows],
            max_value=1.0,
            title="mean pairwise cosine",
        )
    )
    out.append("<h3>Effective number of documents (Vendi) per concept</h3>")
    out.append(
        svg_bars([(r["concept"], r["effective_documents"]) for r in rows], title="Vendi score")
    )
    out.append("<h3>Nearest-neighbour cosine (box p25–p75, whiskers p5–p95, line median)</h3>")
    out.append(svg_ranges([(c, v["nn_cosine"]) for c, v in per.items()], title="nearest neighbour"))
    strata = f.get("per_concept_doc_type") or []
    if strata:
        out.append("<h3>Mean pairwise cosine per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                sorted({r["doc_type"] for r in strata}),
                sorted({r["concept"] for r in strata}),
                {(r["doc_type"], r["concept"]): r["mean_pairwise_cosine"] for r in strata},
                fmt=lambda v: f"{v:.2f}",
                vmin=0,
                vmax=1,
                title="mean pairwise cosine",
            )
        )
        out.append("<h3>Effective documents per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                sorted({r["doc_type"] for r in strata}),
                sorted({r["concept"] for r in strata}),
                {(r["doc_type"], r["concept"]): r["effective_documents"] for r in strata},
                fmt=lambda v: f"{v:.0f}",
                title="effective documents",
            )
        )
    return "".join(out)


def _section_keywords(f: dict[str, Any]) -> str:
    out = []
    per = f.get("per_concept") or {}
    if not per:
        out.append(
            '<p class="empty">No required keywords were checked: pass universe files '
            "with --universe or list them under universes: in sdfkit.yaml.</p>"
        )
    for concept, fig in per.items():
        kws = fig.get("keywords") or []
        out.append(
            f"<h3>{esc(concept)}: {fmt_num(fig.get('documents'))} documents, "
            f"{fmt_num(fig.get('documents_missing_any'))} missing a required keyword</h3>"
        )
        out.append(
            svg_bars(
                [(k["keyword"], float(k["rate"])) for k in kws],
                fmt=fmt_pct,
                max_value=1.0,
                marks=[k["min_rate"] for k in kws],
                title=f"keyword rates for {concept}",
            )
        )
        out.append(html_table(kws, ["keyword", "rate", "min_rate", "with_keyword", "meets_min"]))
        ex = fig.get("missing_examples") or []
        if ex:
            out.append(
                "<p class=notes>Some documents missing a keyword (all are in table "
                "<code>audit_keywords_missing</code>): " + esc(", ".join(ex[:10])) + "</p>"
            )
    return "".join(out)


def _section_anti_universe(f: dict[str, Any]) -> str:
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
