"""``sdf check``: thresholds that stop a pipeline before it pays for training.

Thresholds live under ``check:`` in the project file (``sdfkit.yaml``, or ``--config FILE``)::

    check:
      max_name_share: 0.05              # top person name's share of all name mentions
      max_ngram_doc_share: 0.30         # any n-gram's share of documents; or per n:
      #   max_ngram_doc_share: {"3": 0.5, "4": 0.3, "5": 0.2}
      max_near_duplicate_fraction: 0.05 # documents in near-duplicate clusters beyond one each
      min_keyword_rate: null            # null: each universe's own min_rate; a number overrides
      max_mean_pairwise_cosine: 0.6     # per concept (embedding diversity)
      max_capability_drop: 0.05         # base score - checkpoint score, per benchmark metric
      max_anti_universe_documents: 0    # documents carrying a ban of their universe (default 0)
      max_name_doc_share: 0.05          # documents naming the top name (default 0.05)
      max_top5_names_doc_share: 0.15    # documents naming any of the five top names (default)
      max_top5_ngrams_doc_share: 0.5    # documents carrying any of the five top n-grams

A threshold left out (or ``null``, except ``min_keyword_rate``) is not checked, except the
three gates by documents that have defaults (docs/collapse-loop.md): ``null`` turns them off. Each check
is evaluated against the figures of a ``report.json``; the same verdicts head the HTML report.
A configured threshold whose audit did not run is a breach too ("not run"): a pipeline must
not pass a check it never made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from sdfkit.errors import ConfigError, SdfError
from sdfkit.settings import Checked, at_least, between, check_fields

__all__ = ["CheckFailed", "CheckResult", "ConfigError", "Thresholds", "Verdict", "evaluate"]


class CheckFailed(SdfError):
    """One or more thresholds were crossed (exit code 1, unlike bad input's 2)."""

    exit_code = 1


SHARE = between(0, 1)


@dataclass
class Thresholds(Checked):
    """Limits ``sdf check`` enforces; ``None`` leaves a figure unchecked."""

    where_: ClassVar[str] = "check"

    max_name_share: float | None = field(default=None, metadata=SHARE)
    #: One value for every n, or {"n": value} for some n.
    max_ngram_doc_share: float | dict[str, float] | None = field(default=None, metadata=SHARE)
    max_near_duplicate_fraction: float | None = field(default=None, metadata=SHARE)
    #: None: each universe's own min_rate; a number replaces every one of them.
    min_keyword_rate: float | None = field(default=None, metadata=SHARE)
    #: False turns keyword checks off entirely.
    check_keywords: bool = True
    max_mean_pairwise_cosine: float | None = field(default=None, metadata=SHARE)
    #: ``sdf eval --capabilities``: how far any checkpoint's benchmark score may fall below
    #: the base model's (metrics are read as higher-is-better, e.g. accuracy).
    max_capability_drop: float | None = field(default=None, metadata=SHARE)
    #: Documents (not excluded for another reason) carrying a name or phrase their own
    #: universe bans (the anti_universe audit). On by default: the anti-universe is a rule.
    max_anti_universe_documents: int | None = field(default=0, metadata=at_least(0))
    #: Collapse by documents (docs/collapse.md): the share of documents naming the top name,
    #: and naming any of the five top names. On by default; the seed's "Sarah Chen" sat in
    #: nearly every document, while seed names are used at most twice per run.
    max_name_doc_share: float | None = field(default=0.05, metadata=SHARE)
    max_top5_names_doc_share: float | None = field(default=0.15, metadata=SHARE)
    #: The share of documents carrying any of the five top n-grams, per n (or one number).
    max_top5_ngrams_doc_share: float | dict[str, float] | None = field(default=None, metadata=SHARE)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<config>") -> Thresholds:
        """The ``check:`` section of a project file, checked: unknown keys, values that are
        not numbers in [0, 1], n-gram sizes that are not whole numbers are errors naming
        ``source`` and the key."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: 'check' must be a mapping of thresholds")
        checked = check_fields(cls, data, f"{source}: check", noun="threshold")
        try:
            return cls(**checked)
        except ConfigError as exc:  # a check of the whole (it names the key)
            raise ConfigError(f"{source}: {exc}") from None

    def __post_init__(self) -> None:
        super().__post_init__()  # numbers in [0, 1]; "4" and 4 both become the key "4"
        for key in ("max_ngram_doc_share", "max_top5_ngrams_doc_share"):
            limits = getattr(self, key)
            for n in limits if isinstance(limits, dict) else ():
                if not n.isdigit() or int(n) < 1:
                    raise ConfigError(
                        f"{self.where_}.{key}: key {n!r} must be an n-gram size "
                        "(a whole number such as 4)"
                    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    """One threshold against one figure."""

    check: str
    subject: str
    figure: float | None
    threshold: float | None
    status: str  # "pass", "fail" or "not run"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        if self.status == "not run":
            return f"NOT RUN  {self.check} ({self.subject}): {self.detail}"
        op = ">=" if self.check.startswith("min_") else "<="
        word = "ok     " if self.passed else "BREACH "
        extra = f"  [{self.detail}]" if self.detail else ""
        return (
            f"{word}  {self.check} ({self.subject}): {self.figure:.4g}, threshold {op} "
            f"{self.threshold:.4g}{extra}"
        )


@dataclass
class CheckResult:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def breaches(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    @property
    def ok(self) -> bool:
        return not self.breaches


def _max_verdict(
    check: str, subject: str, figure: Any, threshold: float, detail: str = ""
) -> Verdict:
    value = _as_float(figure)
    if value is None:
        return Verdict(check, subject, None, threshold, "not run", "figure missing from report")
    return Verdict(
        check, subject, value, threshold, "pass" if value <= threshold else "fail", detail
    )


def _as_float(value: Any) -> float | None:
    """A figure as one number: a number itself, or the largest number inside a list/dict."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        for key in ("share", "value", "fraction"):
            if key in value:
                return _as_float(value[key])
        nums = [_as_float(v) for v in value.values()]
    elif isinstance(value, list):
        nums = [_as_float(v) for v in value]
    else:
        return None
    nums = [v for v in nums if v is not None]
    return max(nums) if nums else None


def _not_run(check: str, audit: str, threshold: float | None) -> Verdict:
    return Verdict(
        check, audit, None, threshold, "not run", f"the {audit} audit is not in the report"
    )


def _nothing_measured(check: str, subject: str, threshold: Any) -> Verdict:
    shown = min(threshold.values()) if isinstance(threshold, dict) and threshold else threshold
    return Verdict(check, subject, None, shown, "not run", "no documents to measure")


def evaluate(report: dict[str, Any], thresholds: Thresholds) -> CheckResult:
    """Every configured threshold against the figures of a report.json.

    A check with nothing to measure (its audit saw no documents) is NOT RUN, never a pass."""
    out = CheckResult()
    t = thresholds
    empty = {
        key: isinstance(report.get(key), dict) and report[key].get("documents") == 0
        for key in ("names", "ngrams", "near_duplicates", "keywords", "diversity")
    }
    measured = {
        "max_name_share": ("names", "names"),
        "max_ngram_doc_share": ("ngrams", "ngrams"),
        "max_near_duplicate_fraction": ("near_duplicates", "corpus"),
        "max_mean_pairwise_cosine": ("diversity", "diversity"),
    }
    skipped: dict[str, None] = {}
    for check, (key, subject) in measured.items():
        limit = getattr(t, check)
        if limit is not None and empty[key]:
            out.verdicts.append(_nothing_measured(check, subject, limit))
            skipped[check] = None  # reported once, not evaluated below
    t = replace(t, **skipped) if skipped else t

    if t.max_name_share is not None:
        names = report.get("names")
        if not isinstance(names, dict):
            out.verdicts.append(_not_run("max_name_share", "names", t.max_name_share))
        else:
            top = names.get("top") or []
            who = names.get("top_share_name") or (
                top[0].get("name", "top name") if top and isinstance(top[0], dict) else "top name"
            )
            out.verdicts.append(
                _max_verdict("max_name_share", str(who), names.get("top_share"), t.max_name_share)
            )

    if t.max_ngram_doc_share is not None:
        ngrams = report.get("ngrams")
        if not isinstance(ngrams, dict):
            limit = t.max_ngram_doc_share
            shown = min(limit.values()) if isinstance(limit, dict) and limit else limit
            out.verdicts.append(_not_run("max_ngram_doc_share", "ngrams", shown))  # type: ignore[arg-type]
        else:
            shares = ngrams.get("max_doc_share") or {}
            limits = (
                t.max_ngram_doc_share
                if isinstance(t.max_ngram_doc_share, dict)
                else {n: t.max_ngram_doc_share for n in shares}
            )
            for n, limit in sorted(limits.items()):
                top = (ngrams.get("top") or {}).get(str(n)) or []
                leader = max(top, key=lambda r: r.get("documents", 0), default=None)
                detail = f"{leader['ngram']!r}" if leader and "ngram" in leader else ""
                out.verdicts.append(
                    _max_verdict(
                        "max_ngram_doc_share", f"{n}-grams", shares.get(str(n)), limit, detail
                    )
                )

    if t.max_near_duplicate_fraction is not None:
        dups = report.get("near_duplicates")
        if not isinstance(dups, dict):
            out.verdicts.append(
                _not_run("max_near_duplicate_fraction", "dedup", t.max_near_duplicate_fraction)
            )
        else:
            n_clusters = len(dups.get("clusters") or [])
            out.verdicts.append(
                _max_verdict(
                    "max_near_duplicate_fraction",
                    "corpus",
                    dups.get("duplicate_fraction"),
                    t.max_near_duplicate_fraction,
                    f"{n_clusters} clusters",
                )
            )

    if t.check_keywords:
        kw = report.get("keywords")
        if not isinstance(kw, dict):
            if t.min_keyword_rate is not None:
                out.verdicts.append(_not_run("min_keyword_rate", "keywords", t.min_keyword_rate))
        else:
            for concept, fig in (kw.get("per_concept") or {}).items():
                for k in fig.get("keywords") or []:
                    limit = t.min_keyword_rate if t.min_keyword_rate is not None else k["min_rate"]
                    rate = float(k["rate"])
                    seen = fig.get("documents", 0) > 0
                    out.verdicts.append(
                        Verdict(
                            "min_keyword_rate",
                            f"{concept}: {k['keyword']}",
                            rate,
                            float(limit),
                            ("pass" if rate >= limit else "fail") if seen else "not run",
                            "" if fig.get("documents", 0) else "no documents",
                        )
                    )

    _doc_share_checks(report, t, out)

    if t.max_mean_pairwise_cosine is not None:
        div = report.get("diversity")
        if not isinstance(div, dict):
            out.verdicts.append(
                _not_run("max_mean_pairwise_cosine", "diversity", t.max_mean_pairwise_cosine)
            )
        else:
            if not div.get("per_concept"):
                out.verdicts.append(
                    _nothing_measured(
                        "max_mean_pairwise_cosine", "diversity", t.max_mean_pairwise_cosine
                    )
                )
            for concept, fig in (div.get("per_concept") or {}).items():
                out.verdicts.append(
                    _max_verdict(
                        "max_mean_pairwise_cosine",
                        concept,
                        fig.get("mean_pairwise_cosine"),
                        t.max_mean_pairwise_cosine,
                        f"effective documents {fig.get('effective_documents', '?')}",
                    )
                )
    if t.max_capability_drop is not None:
        out.verdicts += _capability_verdicts(
            report.get("capabilities"), t.max_capability_drop, report.get("capabilities_error")
        )
    return out


def _capability_verdicts(caps: Any, limit: float, error: Any = None) -> list[Verdict]:
    """One verdict per checkpoint, task and metric: its drop below the base model."""
    name = "max_capability_drop"
    if not isinstance(caps, list):
        why = "no capability scores in the report: run `sdf eval RUN --capabilities TASKS`"
        if error:
            why = f"capability changes could not be computed: {error}"
        return [Verdict(name, "capabilities", None, limit, "not run", why)]
    out = []
    for r in caps:
        if r.get("model_label") == "base":
            continue
        subject = f"{r.get('run')} step {r.get('step')}: {r.get('task')} {r.get('metric')}"
        change = _as_float(r.get("change"))
        if change is None:
            why = "no base-model score to compare with (evaluate the base model too)"
            out.append(Verdict(name, subject, None, limit, "not run", why))
            continue
        se = _as_float(r.get("change_stderr"))
        detail = f"{r.get('value')} vs base {r.get('base_value')}" + (
            f", stderr of the change {se:.3g}" if se is not None else ""
        )
        out.append(_max_verdict(name, subject, -change, limit, detail))
    return out


def _doc_share_checks(report: dict[str, Any], t: Thresholds, out: CheckResult) -> None:
    """The gates by documents: anti-universe violations, top names' and n-grams' shares."""
    if t.max_anti_universe_documents is not None:
        au = report.get("anti_universe")
        if not isinstance(au, dict):
            out.verdicts.append(
                _not_run(
                    "max_anti_universe_documents", "anti_universe", t.max_anti_universe_documents
                )
            )
        else:
            worst = max(au.get("universes") or [{}], key=lambda u: u.get("violating_documents", 0))
            items = worst.get("items") or []
            detail = (
                f"e.g. {worst.get('universe')}: {items[0]['kind']} {items[0]['text']!r}"
                if items
                else ""
            )
            out.verdicts.append(
                _max_verdict(
                    "max_anti_universe_documents",
                    "corpus",
                    au.get("violating_documents"),
                    float(t.max_anti_universe_documents),
                    detail,
                )
            )
    names = report.get("names")
    for check, key, who in (
        ("max_name_doc_share", "top_doc_share", "top_doc_share_name"),
        ("max_top5_names_doc_share", "top5_doc_share", None),
    ):
        limit = getattr(t, check)
        if limit is None:
            continue
        if not isinstance(names, dict):
            out.verdicts.append(_not_run(check, "names", limit))
            continue
        subject = str(names.get(who) or "top name") if who else "five top names"
        out.verdicts.append(_max_verdict(check, subject, names.get(key), limit))
    if t.max_top5_ngrams_doc_share is not None:
        ngrams = report.get("ngrams")
        limit_of = t.max_top5_ngrams_doc_share
        if not isinstance(ngrams, dict):
            shown = min(limit_of.values()) if isinstance(limit_of, dict) and limit_of else limit_of
            out.verdicts.append(_not_run("max_top5_ngrams_doc_share", "ngrams", shown))  # type: ignore[arg-type]
            return
        shares = ngrams.get("top5_doc_share") or {}
        limits = limit_of if isinstance(limit_of, dict) else {n: limit_of for n in shares}
        for n, limit in sorted(limits.items()):
            out.verdicts.append(
                _max_verdict(
                    "max_top5_ngrams_doc_share", f"five top {n}-grams", shares.get(str(n)), limit
                )
            )


def load_report(path: str | Path) -> dict[str, Any]:
    """A report.json, with a clear error when it is missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise SdfError(f"{p}: no report here: run `sdf report` first, or `sdf check --run`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SdfError(f"{p}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise SdfError(f"{p}: a report must be a JSON object")
    return data


def check_report(report: dict[str, Any], thresholds: Thresholds) -> CheckResult:
    """Evaluate and raise ``CheckFailed`` (exit code 1) naming every breach."""
    result = evaluate(report, thresholds)
    if result.breaches:
        raise CheckFailed(
            f"{len(result.breaches)} threshold(s) breached:\n"
            + "\n".join(v.line() for v in result.breaches)
        )
    return result
