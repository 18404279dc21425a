"""``sdf report`` / ``make report``: run every audit, write reports/report.html and report.json.

``build(store, config)`` runs each audit of ``sdfkit.audits.AUDITS`` (any can be skipped),
stores its tables in the corpus (``audit_<name>_<table>``), evaluates the thresholds of
``sdf check`` on the figures, and writes:

- ``report.json``: every figure, keyed by each audit module's ``JSON_KEY`` (``shape``,
  ``ngrams``, ``names``, ``near_duplicates``, ``diversity``, ``keywords``), plus ``audits`` (status,
  seconds, flags, notes per audit), ``checks`` (the verdicts), and ``corpus`` and
  ``corpus_state`` (what was measured: ``sdf check`` refuses the report once the corpus
  changes, see ``sdfkit.report.freshness``);
- ``report.html``: one self-contained page (inline CSS and SVG, no scripts, no network) that
  opens with the verdicts and flags, then each audit's plots and tables. It is rendered from
  the JSON alone (``render_html(report)``), so the two never disagree.

Nothing here knows an audit: each section, JSON key and gate comes from the audit's module
(see ``sdfkit.audits``), and the evaluation's part from ``sdfkit.report.parts``. Both files
are written to a temporary name and renamed into place.

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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.audits import AUDITS, AuditResult, json_key, run_order, save
from sdfkit.audits import module as audit_module
from sdfkit.errors import SdfError
from sdfkit.report.check import ConfigError, Verdict, run_checks, thresholds_class
from sdfkit.report.freshness import marks_state, record_state
from sdfkit.report.html import CSS, esc, fmt_num
from sdfkit.report.parts import report_parts
from sdfkit.report.verdicts import shown_pair
from sdfkit.settings import check_fields
from sdfkit.store.catalog import finite
from sdfkit.store.durable import write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

DEFAULT_CONFIG_FILE = "sdfkit.yaml"
TOP_LEVEL_KEYS = ("universes", "report", "audits", "check")


@dataclass
class ReportConfig:
    """What to run and where to write; ``load_config`` fills it from the project file."""

    html: Path = Path("reports/report.html")
    json: Path = Path("reports/report.json")
    universes: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    #: Per-audit settings: audit name -> {Config field: value}.
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``sdfkit.report.check.Thresholds``: every audit's gates of ``sdf check``.
    thresholds: Any = field(default_factory=lambda: thresholds_class()())
    engine: str | None = None
    #: The project file these settings came from (None: defaults only).
    source: str | None = None
    #: Where each audit setting came from, for errors found once the corpus is open (an
    #: audit's ``where``): "<audit>.<key>" -> the file and key, or the option.
    origins: dict[str, str] = field(default_factory=dict)

    def origin(self, name: str, key: str) -> str:
        """How errors name an audit setting: its file and key, or the option that set it."""
        return self.origins.get(f"{name}.{key}") or f"audits.{name}.{key}"


def load_config(path: str | Path | None = None) -> ReportConfig:
    """Settings from ``path``, else ``./sdfkit.yaml`` when present, else the defaults."""
    import yaml

    from sdfkit.settings import load_yaml

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
        data = load_yaml(text) or {}
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
    cfg.origins = {
        f"{name}.{key}": f"{p}: audits.{name}.{key}"
        for name, settings in cfg.audits.items()
        for key in settings
    }
    for name in cfg.audits:  # every setting checked now, not when its audit's turn comes
        try:
            cfg.audits[name] = _checked_settings(name, cfg.audits[name], f"{p}: audits.{name}")
            audit_config(name, None, cfg)
        except ModuleNotFoundError:
            pass  # `sdf report` reports the audit "not available" when its turn comes
    cfg.thresholds = thresholds_class().from_mapping(data.get("check"), str(p))
    return cfg


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def set_audit_settings(
    config: ReportConfig,
    name: str,
    settings: dict[str, Any],
    origin: str = "command line",
    options: dict[str, str] | None = None,
) -> None:
    """Lay ``settings`` (e.g. ``--set FIELD=VALUE``) over the project file's settings of one
    audit, checked first so an error names where the bad value came from; ``options`` names
    the option that gave each setting (``--where``), for errors found later."""
    checked = _checked_settings(name, settings, f"{origin}: audits.{name}")
    config.audits[name] = {**(config.audits.get(name) or {}), **checked}
    for key in checked:
        config.origins[f"{name}.{key}"] = (options or {}).get(key) or (
            f"{origin}: audits.{name}.{key}"
        )
    audit_config(name, None, config)


def check_wheres(store: Store, names: list[str], config: ReportConfig) -> None:
    """Refuse a bad ``where`` of any of these audits before the first one runs (an unknown
    column, a file DuckDB cannot read...): one line naming the file and key, or the option.
    Checked on the connection ``sdf sql`` uses (``sdfkit.audits.check_where``)."""
    from sdfkit.audits import check_where

    for name in names:
        try:
            where = getattr(audit_config(name, None, config), "where", None)
        except ModuleNotFoundError:
            continue  # the audit's own turn reports it "not available"
        check_where(store, name, where, config.origin(name, "where"))


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
    if only and not wanted:
        raise SdfError(f"nothing to run: every audit of --only ({', '.join(only)}) is skipped too")
    if write:  # before any audit runs: a bad output path must not cost the audits' minutes
        _check_outputs(store, config)
    # A bad setting or environment variable stops the report before the first audit,
    # not midway through (nor as the same failure repeated by every audit).
    for name in wanted:
        try:
            audit_config(name, None, config)
        except ModuleNotFoundError:
            pass  # the audit's own turn reports it "not available" without losing the others
    if wanted:
        check_environment(config.engine)
        check_wheres(store, wanted, config)
    # What the audits read, fingerprinted before the first one: a document landing while
    # they run makes this report stale for `sdf check`, never fresh (sdfkit.report.freshness)
    record = record_state(store)
    data: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sdfkit_version": __version__,
        "corpus": str(store.root.resolve()),
        "config": config.source,
        "audits": {},
    }
    results: dict[str, AuditResult] = {}
    prepared = _prepare(store, wanted, config)
    try:
        _run_audits(store, wanted, config, data, results)
    finally:
        for module in prepared:
            module.release()
    for part in report_parts():
        part.add(store, data)
    # exclusions and grades after the last audit: the dedup and anti-universe audits write them
    data["corpus_state"] = {**record, "marks": marks_state(store)}
    verdicts = run_checks(data, config.thresholds).verdicts
    data["thresholds"] = config.thresholds.to_dict()
    data["checks"] = [dataclasses.asdict(v) for v in verdicts]
    html_path = json_path = None
    if write:
        text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
        json_path = write_text_atomic(config.json, text)
        html_path = write_text_atomic(config.html, render_html(data))
    return Report(data, results, verdicts, html_path, json_path)


def _check_outputs(store: Store, config: ReportConfig) -> None:
    """The report's two files may be written: each a file or nothing yet (never a folder,
    a device such as /dev/full, or a path under a file), and never inside the corpus
    folder, where ``--html corpus/sdf.duckdb`` replaced the catalog."""
    from sdfkit.store.durable import check_writable

    for option, path in (("--json", config.json), ("--html", config.html)):
        if store.holds(path):
            raise SdfError(
                f"{option} {path}: inside the corpus folder {store.root}; write reports elsewhere"
            )
        check_writable(path)


def _prepare(store: Store, wanted: list[str], config: ReportConfig) -> list[Any]:
    """Let each wanted audit that can start slow work ahead (``prepare(store, config)``: the
    names audit's NER workers) do so before the first audit; the modules that did, whose
    ``release()`` the report calls at its end. A failure here is left to the audit's turn."""
    from sdfkit.audits import get

    prepared = []
    for name in wanted:
        try:
            module = get(name)
            if hasattr(module, "prepare"):
                prepared.append(module)  # released even if prepare fails midway
                module.prepare(store, audit_config(name, module, config))
        except Exception:  # noqa: BLE001, S112 - the audit's own run reports it
            continue
    return prepared


def _run_audits(
    store: Store,
    wanted: list[str],
    config: ReportConfig,
    data: dict[str, Any],
    results: dict[str, AuditResult],
) -> None:
    """Run each wanted audit, recording its status, time and figures in ``data`` (in registry
    order). The audits that write exclusions run first (``sdfkit.audits.run_order``), so a
    ``where`` reading ``excluded`` sees this report's exclusions and a second report on an
    unchanged corpus gives the same figures; an audit module's ``finish(store, result,
    config)`` then completes figures drawn from the tables the others stored."""
    from sdfkit.audits import get

    for name in AUDITS:
        data["audits"][name] = {"status": "skipped", "seconds": 0.0, "flags": [], "notes": []}
    for name in run_order(wanted):
        entry = data["audits"][name]
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
            data[json_key(name)] = result.figures
            entry.update(status="ok", flags=result.flags, notes=result.notes)
        entry["seconds"] = round(time.perf_counter() - started, 2)
    for name, result in results.items():
        module = get(name)
        if hasattr(module, "finish"):
            started = time.perf_counter()
            try:
                module.finish(store, result, audit_config(name, module, config))
            except Exception as exc:  # noqa: BLE001 - as a failure of the audit itself
                data["audits"][name].update(status="failed", error=f"{type(exc).__name__}: {exc}")
                data.pop(json_key(name), None)
            data["audits"][name]["seconds"] += round(time.perf_counter() - started, 2)


#: NaN/inf become null: report.json must parse in strict JSON readers (browsers, jq).
_finite = finite


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
        + "".join(f'<a href="#{n}">{esc(audit_module(n).TITLE.split(":")[0])}</a>' for n in AUDITS)
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
            figure, limit = fmt_num(c["figure"]), fmt_num(c["threshold"])
            if figure == limit and c["figure"] != c["threshold"]:  # 0.66995 is not 0.67
                figure, limit = shown_pair(c["figure"], c["threshold"])
            rows.append(
                f'<tr><td><span class="badge {cls}">{esc(c["status"].upper())}</span></td>'
                f"<td>{esc(c['check'])}</td><td>{esc(c['subject'])}</td>"
                f'<td class="n">{esc(figure)}</td>'
                f'<td class="n">{op} {esc(limit)}</td><td>{esc(c["detail"])}</td></tr>'
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

    for name in AUDITS:
        e = audits.get(name, {"status": "not run"})
        module = audit_module(name)
        parts.append(f'<section id="{name}"><h2>{esc(module.TITLE)}</h2>')
        fig = report.get(module.JSON_KEY)
        if e.get("status") != "ok" or not isinstance(fig, dict):
            why = e.get("error") or ""
            parts.append(
                f'<p class="empty">not run ({esc(e.get("status", "not run"))}) {esc(why)}</p>'
            )
        else:
            try:
                parts.append(module.section(fig))
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
