"""A verdict of ``sdf check``: one threshold against one figure of a report.json.

Each audit module (and each report part) turns its own figures into verdicts with these
helpers; ``sdfkit.report.check`` only loops over them. Nothing here knows an audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
        figure, threshold = shown_pair(self.figure, self.threshold)
        return f"{word}  {self.check} ({self.subject}): {figure}, threshold {op} {threshold}{extra}"


def shown_pair(figure: float, threshold: float) -> tuple[str, str]:
    """A figure and its threshold to 4 significant digits, or as many more as it takes to
    tell them apart: a rate of 0.66995 against 0.67 must not read "0.67, threshold >= 0.67"
    beside BREACH (the verdict compares the numbers; rounding is for display only)."""
    for digits in (4, 6, 8, 12, 17):
        shown = f"{figure:.{digits}g}", f"{threshold:.{digits}g}"
        if shown[0] != shown[1] or figure == threshold:
            break
    return shown


@dataclass
class CheckResult:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def breaches(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    @property
    def ok(self) -> bool:
        return not self.breaches


def max_verdict(
    check: str, subject: str, figure: Any, threshold: float, detail: str = ""
) -> Verdict:
    """``figure`` must be at most ``threshold``; a missing figure is NOT RUN."""
    value = as_float(figure)
    if value is None:
        return Verdict(check, subject, None, threshold, "not run", "figure missing from report")
    return Verdict(
        check, subject, value, threshold, "pass" if value <= threshold else "fail", detail
    )


def as_float(value: Any) -> float | None:
    """A figure as one number: a number itself, or the largest number inside a list/dict."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        for key in ("share", "value", "fraction"):
            if key in value:
                return as_float(value[key])
        nums = [as_float(v) for v in value.values()]
    elif isinstance(value, list):
        nums = [as_float(v) for v in value]
    else:
        return None
    nums = [v for v in nums if v is not None]
    return max(nums) if nums else None


def shown_limit(threshold: Any) -> Any:
    """A threshold as one number for a verdict line: the smallest of a per-n mapping."""
    return min(threshold.values()) if isinstance(threshold, dict) and threshold else threshold


def not_run(check: str, audit: str, threshold: Any) -> Verdict:
    """The audit that measures ``check`` is not in the report: a breach, never a pass."""
    return Verdict(
        check,
        audit,
        None,
        shown_limit(threshold),
        "not run",
        f"the {audit} audit is not in the report",
    )


def nothing_measured(check: str, subject: str, threshold: Any) -> Verdict:
    """The audit ran over no documents: NOT RUN, never a pass."""
    return Verdict(
        check, subject, None, shown_limit(threshold), "not run", "no documents to measure"
    )


def measured_nothing(figures: Any) -> bool:
    """The audit's figures say it saw no documents."""
    return isinstance(figures, dict) and figures.get("documents") == 0


def unmeasured(
    figures: Any, check: str, audit: str, threshold: Any, subject: str | None = None
) -> Verdict | None:
    """The verdict of ``check`` when its audit gives nothing to compare: NOT RUN because it
    saw no documents (``subject``: what the line names, default the audit) or because it is
    not in the report. None when there are figures to judge."""
    if measured_nothing(figures):
        return nothing_measured(check, subject or audit, threshold)
    if not isinstance(figures, dict):
        return not_run(check, audit, threshold)
    return None
