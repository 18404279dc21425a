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
import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.audits import AUDITS, JSON_KEYS, AuditResult, save
from sdfkit.report.check import ConfigError, Thresholds, Verdict, evaluate
from sdfkit.settings import check_fields

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
    _add_evaluation(store, data)
    verdicts = evaluate(data, config.thresholds).verdicts
    data["thresholds"] = config.thresholds.to_dict()
    data["checks"] = [dataclasses.asdict(v) for v in verdicts]
    html_path = json_path = None
    if write:
        text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
        json_path = write_atomic(config.json, text)
        html_path = write_atomic(config.html, render_html(data))
    return Report(data, results, verdicts, html_path, json_path)


def _add_evaluation(store: Store, data: dict[str, Any]) -> None:
    """``evaluation``: the curves of ``sdf eval`` (``queries/eval_curves.sql``), per concept;
    ``capabilities`` (``queries/capability_changes.sql``) and ``fact_curves``
    (``queries/fact_curves.sql``, after an evaluation); each absent when never run. A broken
    query (a user's edited copy) is reported in ``<part>_error`` rather than losing the audits
    or the other parts."""
    from sdfkit.errors import SdfError
    from sdfkit.evaluate.capabilities import changes
    from sdfkit.evaluate.curves import curves
    from sdfkit.evaluate.fact_curves import fact_curves

    parts = [("evaluation", curves), ("capabilities", changes), ("fact_curves", fact_curves)]
    for key, fn in parts:
        if key == "fact_curves" and "evaluation" not in data:  # needs sdf eval's tables
            continue
        try:
            rows = fn(store)
        except SdfError as exc:
            data[f"{key}_error"] = str(exc)
            continue
        if rows:
            data[key] = rows


def _has_evaluation(report: dict[str, Any]) -> bool:
    keys = ("evaluation", "evaluation_error", "capabilities", "capabilities_error", "fact_curves")
    return any(k in report for k in keys)


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


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".tmp-{p.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def verdict_errors(report: dict[str, Any]) -> list[str]:
    """Audits that failed to run, as sentences (the CLI prints them)."""
    return [
        f"audit {name} {e['status']}: {e.get('error', '')}"
        for name, e in report.get("audits", {}).items()
        if e.get("status") in ("failed", "not available")
    ]


# ====================================================================== HTML
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits - 1}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


PALETTE = ("#3b6ea5", "#e07b39", "#5a9e4b", "#b8444a", "#7c5ea8", "#8a6d3b", "#c45c9a", "#6b6b6b")


def svg_bars(
    items: list[tuple[str, float]],
    fmt: Any = _num,
    threshold: float | None = None,
    max_value: float | None = None,
    title: str = "",
    marks: list[float | None] | None = None,
    width: int = 720,
) -> str:
    """Horizontal bars with labels; ``threshold`` draws a red line, ``marks`` a tick per bar."""
    if not items:
        return '<p class="empty">nothing to plot</p>'
    label_w, value_w, bar_h, gap = 280, 70, 18, 6
    plot_w = width - label_w - value_w
    top = max([v for _, v in items] + [threshold or 0] + [m or 0 for m in marks or []])
    top = max_value or top or 1.0
    height = len(items) * (bar_h + gap) + 24
    out = [
        f'<svg class="plot bars" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(items):
        y = 4 + i * (bar_h + gap)
        w = max(0.0, plot_w * float(value) / top)
        short = label if len(label) <= 42 else label[:41] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="lbl">{_e(short)}'
            f"<title>{_e(label)}</title></text>"
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}">'
            f"<title>{_e(label)}: {_e(fmt(value))}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" class="val">{_e(fmt(value))}</text>'
        )
        if marks and i < len(marks) and marks[i] is not None:
            x = label_w + plot_w * float(marks[i]) / top  # type: ignore[arg-type]
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 2}" y2="{y + bar_h + 2}" '
                f'stroke="#cf222e" stroke-width="2"><title>minimum {_e(fmt(marks[i]))}</title></line>'
            )
    if threshold is not None:
        x = label_w + plot_w * threshold / top
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 18}" stroke="#cf222e" '
            f'stroke-dasharray="4 3" stroke-width="1.5"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" class="thr">'
            f"threshold {_e(fmt(threshold))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def svg_histogram(
    series: dict[str, list[tuple[float, float]]],
    bin_width: float,
    x_label: str,
    title: str = "",
    width: int = 720,
    height: int = 220,
) -> str:
    """Overlaid step histograms, one colour per series (e.g. per concept)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return '<p class="empty">nothing to plot</p>'
    x0 = min(x for x, _ in pts)
    x1 = max(x for x, _ in pts) + bin_width
    y1 = max(y for _, y in pts) or 1
    left, bottom, right, top_pad = 48, 36, 12, 30  # the legend runs along the top
    pw, ph = width - left - right, height - bottom - top_pad

    def sx(x: float) -> float:
        return left + pw * (x - x0) / ((x1 - x0) or 1)

    def sy(y: float) -> float:
        return top_pad + ph * (1 - y / y1)

    out = [
        f'<svg class="plot histogram" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{sy(0):.1f}" x2="{width - right}" y2="{sy(0):.1f}" class="axis"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{sy(0):.1f}" class="axis"/>',
    ]
    for frac in (0, 0.5, 1):
        y = y1 * frac
        out.append(
            f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">{_num(y)}</text>'
        )
    step = bin_width * max(1, math.ceil((x1 - x0) / bin_width / 8))
    for i in range(int((x1 - x0) // step) + 1):
        x = x0 + i * step
        out.append(
            f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle" '
            f'class="tick">{_num(round(x))}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="lbl">'
        f"{_e(x_label)}</text>"
    )
    n_series = max(1, len(series))
    for k, (name, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        for x, y in s:
            # grouped: each series takes its own slice of the bucket, so none hides another
            slot = (sx(x + bin_width) - sx(x) - 1) / n_series
            out.append(
                f'<rect x="{sx(x) + k * slot:.1f}" y="{sy(y):.1f}" width="{max(1.0, slot):.1f}" '
                f'height="{sy(0) - sy(y):.1f}" fill="{color}" fill-opacity="0.85">'
                f"<title>{_e(name)}: {_num(y)} in [{_num(x)}, {_num(x + bin_width)})</title></rect>"
            )
    # legend: one row along the top
    x = left
    for k, name in enumerate(series):
        out.append(
            f'<rect x="{x}" y="6" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="15" class="tick">{_e(name)}</text>'
        )
        x += 24 + 7 * len(str(name))
    out.append("</svg>")
    return "".join(out)


def svg_heatmap(
    rows: list[str],
    cols: list[str],
    values: dict[tuple[str, str], float],
    fmt: Any = _num,
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
) -> str:
    """A grid of rows × cols, darker for higher values, each cell labelled."""
    if not rows or not cols or not values:
        return '<p class="empty">nothing to plot</p>'
    vals = list(values.values())
    lo = min(vals) if vmin is None else vmin
    hi = max(vals) if vmax is None else vmax
    label_w, cell_w, cell_h, head_h = 210, 92, 26, 90
    width = label_w + cell_w * len(cols) + 90  # room for the last rotated column label
    height = head_h + cell_h * len(rows) + 6
    out = [
        f'<svg class="plot heatmap" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for j, c in enumerate(cols):
        x = label_w + j * cell_w + cell_w / 2
        short = c if len(c) <= 22 else c[:21] + "…"
        out.append(
            f'<text transform="translate({x:.1f},{head_h - 6}) rotate(-35)" class="tick">'
            f"{_e(short)}<title>{_e(c)}</title></text>"
        )
    for i, r in enumerate(rows):
        y = head_h + i * cell_h
        short = r if len(r) <= 32 else r[:31] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" class="lbl">{_e(short)}'
            f"<title>{_e(r)}</title></text>"
        )
        for j, c in enumerate(cols):
            x = label_w + j * cell_w
            v = values.get((r, c))
            if v is None:
                out.append(
                    f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="#f3f3f3"/>'
                )
                continue
            t = 0.0 if hi == lo else (float(v) - lo) / (hi - lo)
            light = 95 - 55 * t
            ink = "#fff" if light < 62 else "#111"
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="hsl(212,55%,{light:.0f}%)"><title>{_e(r)} × {_e(c)}: {_e(fmt(v))}</title>'
                f'</rect><text x="{x + cell_w / 2 - 1}" y="{y + 17}" text-anchor="middle" '
                f'class="cell" fill="{ink}">{_e(fmt(v))}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def svg_ranges(rows: list[tuple[str, dict[str, float]]], title: str = "", width: int = 720) -> str:
    """Box plots on [0, 1] from quantiles p5, p25, p50, p75, p95 (one row each)."""
    rows = [(n, q) for n, q in rows if q and q.get("p50") is not None]
    if not rows:
        return '<p class="empty">nothing to plot</p>'
    label_w, right, row_h = 200, 20, 26
    pw = width - label_w - right
    lo = min(q.get("p5", q["p50"]) for _, q in rows)
    lo = max(0.0, math.floor(min(lo, 0.9) * 10) / 10)
    height = row_h * len(rows) + 30

    def sx(v: float) -> float:
        return label_w + pw * (v - lo) / (1 - lo)

    out = [
        f'<svg class="plot ranges" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(6):
        v = lo + (1 - lo) * i / 5
        out.append(
            f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="0" y2="{height - 22}" class="grid"/>'
            f'<text x="{sx(v):.1f}" y="{height - 8}" text-anchor="middle" class="tick">{v:.2f}</text>'
        )
    for i, (name, q) in enumerate(rows):
        y = 6 + i * row_h
        p5, p25, p50 = q.get("p5", q["p50"]), q.get("p25", q["p50"]), q["p50"]
        p75, p95 = q.get("p75", q["p50"]), q.get("p95", q["p50"])
        tip = ", ".join(f"{k} {v:.3f}" for k, v in q.items() if isinstance(v, (int, float)))
        out.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="lbl">{_e(name)}</text>'
            f'<line x1="{sx(p5):.1f}" x2="{sx(p95):.1f}" y1="{y + 9}" y2="{y + 9}" stroke="#555"/>'
            f'<rect x="{sx(p25):.1f}" y="{y + 2}" width="{max(1.0, sx(p75) - sx(p25)):.1f}" '
            f'height="14" fill="{PALETTE[1]}" fill-opacity="0.7"><title>{_e(name)}: {tip}</title></rect>'
            f'<line x1="{sx(p50):.1f}" x2="{sx(p50):.1f}" y1="{y}" y2="{y + 18}" stroke="#111" '
            f'stroke-width="2"/>'
        )
    out.append("</svg>")
    return "".join(out)


DASHES = ("", "8 5", "2 4", "12 4 3 4")


def svg_lines(
    series: dict[str, list[tuple[float, float | None]]],
    x_label: str,
    title: str = "",
    fmt: Any = _pct,
    y_max: float = 1.0,
    colors: dict[str, str] | None = None,
    width: int = 720,
    height: int = 260,
) -> str:
    """Line chart: one polyline per series of (x, y) points on [0, ``y_max``], a legend on the
    right; ``None`` values are left out. Colours and strokes are attributes, not only CSS, so
    the chart also draws on pages without this report's stylesheet (``reports/eval.html``)."""
    pts = {name: [(x, y) for x, y in s if y is not None] for name, s in series.items()}
    xs = sorted({x for s in series.values() for x, _ in s})
    if not any(pts.values()):
        return '<p class="empty">nothing to plot</p>'
    left, right, top_pad, bottom = 48, 150, 28, 38
    pw, ph = width - left - right, height - top_pad - bottom
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1

    def sx(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top_pad + ph * (1 - float(y) / y_max)

    out = [
        f'<svg class="plot lines" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" class="lbl" font-weight="bold">{_e(title)}</text>',
    ]
    for i in range(5):
        y = y_max * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            f'class="grid" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">'
            f"{_e(fmt(y))}</text>"
        )
    # a tick per x value when they are few (checkpoints), else eight evenly spaced
    ticks = xs if len(xs) <= 12 else [x0 + (x1 - x0) * i / 8 for i in range(9)]
    for x in ticks:
        out.append(
            f'<text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'class="tick">{_e(_num(x))}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{width - right}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" class="axis" '
        f'stroke="#8c959f"/><line x1="{left}" x2="{left}" y1="{top_pad}" y2="{sy(0):.1f}" '
        f'class="axis" stroke="#8c959f"/>'
        f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" class="lbl">'
        f"{_e(x_label)}</text>"
    )
    for k, (name, s) in enumerate(pts.items()):
        color = (colors or {}).get(name, PALETTE[k % len(PALETTE)])
        # a dash pattern per line, so a line that coincides with a later one still shows
        dash = DASHES[k % len(DASHES)]
        style = f'stroke="{color}" stroke-width="2.5"' + (
            f' stroke-dasharray="{dash}"' if dash else ""
        )
        if s:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline points="{path}" fill="none" {style}/>')
        for x, y in s:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                f"<title>{_e(name)} at {_e(_num(x))}: {_e(fmt(y))}</title></circle>"
            )
        ly = top_pad + 16 * k
        out.append(
            f'<line x1="{width - right + 10}" x2="{width - right + 28}" y1="{ly}" y2="{ly}" '
            f"{style}/>"
            f'<text x="{width - right + 32}" y="{ly + 4}" class="lbl">{_e(name)}'
            f"{'' if s else ' (no data)'}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def html_table(
    rows: list[dict[str, Any]], columns: list[str] | None = None, limit: int = 50
) -> str:
    if not rows:
        return '<p class="empty">no rows</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for r in rows[:limit]:
        cells = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, (list, tuple)):
                v = ", ".join(str(x) for x in v)
            cls = ' class="n"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{_e(_num(v) if cls else ('' if v is None else v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="more">showing {limit} of {len(rows):,} rows</p>' if len(rows) > limit else ""
    return (
        f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table></div>{more}"
    )


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;margin:0;background:#fafafa}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:40px}
h3{font-size:16px;margin:22px 0 8px}.meta{color:#59636e;font-size:13px}
nav a{margin-right:14px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.notrun{background:#6e7781}
.status-ok{color:#1a7f37}.status-failed,.status-not-available{color:#cf222e}.status-skipped{color:#6e7781}
ul.flags li{color:#9a3412}.notes{color:#444;font-size:13px}.empty,.more{color:#6e7781;font-size:13px}
svg.plot{display:block;margin:6px 0 14px;max-width:100%;height:auto}
svg .lbl{font-size:12px;fill:#1f2328}svg .val,svg .tick{font-size:11px;fill:#57606a}
svg .thr{font-size:11px;fill:#cf222e}svg .cell{font-size:11px}svg .axis{stroke:#8c959f}
svg .grid{stroke:#eaeef2}pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
.summary-line{font-size:17px;margin:10px 0}.tw{overflow-x:auto;max-width:100%}
"""

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
        f'<p class="meta">corpus {_e(report.get("corpus", "?"))} · generated '
        f"{_e(report.get('generated_at', '?'))} · sdfkit {_e(report.get('sdfkit_version', '?'))}"
        f" · thresholds from {_e(report.get('config') or 'defaults (no project file)')}</p>",
        "<nav>"
        + '<a href="#summary">Summary</a>'
        + "".join(f'<a href="#{n}">{_e(SECTION_TITLES[n].split(":")[0])}</a>' for n in AUDITS)
        + ('<a href="#evaluation">Evaluation</a>' if _has_evaluation(report) else "")
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
                f'<tr><td><span class="badge {cls}">{_e(c["status"].upper())}</span></td>'
                f"<td>{_e(c['check'])}</td><td>{_e(c['subject'])}</td>"
                f'<td class="n">{_e(_num(c["figure"]))}</td>'
                f'<td class="n">{op} {_e(_num(c["threshold"]))}</td><td>{_e(c["detail"])}</td></tr>'
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
            f'<tr><td><a href="#{name}">{_e(name)}</a></td>'
            f'<td class="status-{_e(status.replace(" ", "-"))}">{_e(status)}</td>'
            f'<td class="n">{_e(_num(e.get("seconds")))}</td><td>{_e(detail)}</td></tr>'
        )
    parts.append("</tbody></table>")
    if any(audits.get(n, {}).get("flags") for n in AUDITS):
        parts.append("<h3>Flags</h3>")
    for n in AUDITS:
        flags = audits.get(n, {}).get("flags") or []
        if not flags:
            continue
        parts.append("<ul class=flags>")
        parts += [f"<li><b>{_e(n)}</b>: {_e(f)}</li>" for f in flags[:6]]
        parts.append("</ul>")
        if len(flags) > 6:
            parts.append(
                f"<details><summary>{len(flags) - 6} more {_e(n)} flags</summary><ul class=flags>"
                + "".join(f"<li>{_e(f)}</li>" for f in flags[6:200])
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
        parts.append(f'<section id="{name}"><h2>{_e(SECTION_TITLES[name])}</h2>')
        fig = report.get(JSON_KEYS[name])
        if e.get("status") != "ok" or not isinstance(fig, dict):
            why = e.get("error") or ""
            parts.append(
                f'<p class="empty">not run ({_e(e.get("status", "not run"))}) {_e(why)}</p>'
            )
        else:
            try:
                parts.append(renderers[name](fig))
            except Exception as exc:  # a figure of an unexpected shape: show it raw, not crash
                parts.append(
                    f'<p class="empty">could not draw this section ({_e(type(exc).__name__)}: '
                    f"{_e(exc)}); the figures are below.</p>"
                )
            if e.get("notes"):
                parts.append("<h3>How this was computed</h3><ul class=notes>")
                parts += [f"<li>{_e(n)}</li>" for n in e["notes"]]
                parts.append("</ul>")
            parts.append(
                "<details><summary>All figures (JSON)</summary><pre>"
                + _e(json.dumps(fig, indent=1, default=str)[:200_000])
                + "</pre></details>"
            )
        parts.append("</section>")
    if _has_evaluation(report):
        parts.append(_section_evaluation(report))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _section_shape(f: dict[str, Any]) -> str:
    out = [
        f'<p class="summary-line">{_num(f.get("documents"))} documents, '
        f"{_num(f.get('tokens'))} tokens"
        + (
            f"; grader pass rate {_pct(f['grade_pass_rate'])} of {_num(f['graded'])} graded"
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
                fmt=_pct,
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
                fmt=_pct,
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
                f" · {_num(f['total_mentions'])} person-name mentions, "
                f"{_num(f.get('distinct_names'))} distinct names"
            )
        out.append(
            f'<p class="summary-line">Top name\'s share of all person-name mentions: '
            f"<b>{_pct(_first_number(share))}</b>{extra}</p>"
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
                fmt=_pct,
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
            "file's front matter:</p><pre>" + _e(text) + "</pre>"
        )
    return "".join(out)


def _first_number(value: Any) -> float | None:
    from sdfkit.report.check import _as_float

    return _as_float(value)


def _section_dedup(f: dict[str, Any]) -> str:
    out = []
    clusters = f.get("clusters") or []
    out.append(
        f'<p class="summary-line">Near-duplicate fraction: <b>{_pct(f.get("duplicate_fraction"))}'
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
            f"<h3>Exact duplicates: {_num(f['exact_duplicate_rows'])} arrivals not stored "
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
            f"<h3>{_e(concept)}: {_num(fig.get('documents'))} documents, "
            f"{_num(fig.get('documents_missing_any'))} missing a required keyword</h3>"
        )
        out.append(
            svg_bars(
                [(k["keyword"], float(k["rate"])) for k in kws],
                fmt=_pct,
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
                "<code>audit_keywords_missing</code>): " + _e(", ".join(ex[:10])) + "</p>"
            )
    return "".join(out)


def _section_anti_universe(f: dict[str, Any]) -> str:
    out = [
        f'<p class="summary-line"><b>{_num(f.get("violating_documents"))}</b> of '
        f"{_num(f.get('documents'))} documents carry a name or phrase their own universe bans "
        "(excluded from selection)</p>"
    ]
    for entry in f.get("universes") or []:
        items = entry.get("items") or []
        out.append(
            f"<h3>{_e(entry.get('universe'))} ({_e(entry.get('concept'))}): "
            f"{_num(entry.get('violating_documents'))} violating documents</h3>"
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
            out.append(f"<h4>{_e(p['universe'])}</h4>" + html_table(rows))
    return "".join(out)


EVAL_COLUMNS = [
    "eval_run", "model_label", "step", "samples", "recall", "real_world", "behaviour",
    "reasoning", "gibberish", "gibberish_samples", "unparseable",
]  # fmt: skip


def _section_evaluation(report: dict[str, Any]) -> str:
    """Curves of recall, behaviour, reasoning and gibberish against training step, per concept
    (the same charts as ``reports/eval.html``), each with its table."""
    from sdfkit.evaluate.curves import CURVES_NOTE, curve_charts

    out = ['<section id="evaluation"><h2>Evaluation: what the model learned, by checkpoint</h2>']
    if "evaluation_error" in report:
        out.append(f'<p class="empty">could not be computed: {_e(report["evaluation_error"])}</p>')
    out.append(f'<p class="notes">{_e(CURVES_NOTE)}</p>')
    for concept, points in (report.get("evaluation") or {}).items():
        out.append(f"<h3>{_e(concept)}</h3>")
        out += curve_charts(concept, points)
        cols = [c for c in EVAL_COLUMNS if any(c in p for p in points)]
        out.append(html_table(points, cols, limit=200))
    facts = report.get("fact_curves")
    if facts or "fact_curves_error" in report:
        from sdfkit.evaluate.fact_curves import FACT_NOTE, fact_sections

        out.append(f'<p class="notes">{_e(FACT_NOTE)}</p>')
        if "fact_curves_error" in report:
            err = report["fact_curves_error"]
            out.append(f'<p class="empty">could not be computed: {_e(err)}</p>')
        out += fact_sections(facts or [])
    caps = report.get("capabilities")
    if caps or "capabilities_error" in report:
        out.append("<h3>Capability regression: change against the base model</h3>")
        out.append(f'<p class="notes">{_e(CAPABILITY_NOTE)}</p>')
        if "capabilities_error" in report:
            err = report["capabilities_error"]
            out.append(f'<p class="empty">could not be computed: {_e(err)}</p>')
        if caps:
            out.append(html_table(caps, [c for c in CAPABILITY_COLUMNS if c in caps[0]], 500))
    out.append("</section>")
    return "\n".join(out)


CAPABILITY_NOTE = (
    "Benchmarks run by `sdf eval RUN --capabilities` (inspect-ai tasks served by Tinker "
    "sampling); change = checkpoint - base model, with the standard error of the difference. "
    "Source: queries/capability_changes.sql (sdf sql capability_changes)."
)
CAPABILITY_COLUMNS = [
    "run", "task", "metric", "step", "model_label", "samples", "value", "stderr",
    "base_value", "change", "change_stderr",
]  # fmt: skip
