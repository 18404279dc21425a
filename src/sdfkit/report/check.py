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
A configured threshold whose audit did not run, or that had nothing to measure (no
documents, no keyword to hold a minimum to), is a breach too ("not run"): a pipeline must
not pass a check it never made. For the same reason ``sdf check`` judges a corpus only by a
report of that corpus as it is now (``sdfkit.report.freshness``).

Each threshold belongs to the audit that measures it: the audit module's ``Gates`` dataclass
holds it with its default, and the module's ``verdicts(report, thresholds)`` reads it.
``Thresholds`` is those ``Gates`` put together, over the registry of ``sdfkit.audits`` and the
report parts of ``sdfkit.report.parts`` (``max_capability_drop`` is the evaluation's);
``run_checks`` loops over the same registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, ClassVar

from sdfkit.errors import ConfigError, SdfError
from sdfkit.report.verdicts import CheckResult, Verdict
from sdfkit.settings import Checked, check_fields

__all__ = [
    "CheckFailed",
    "CheckResult",
    "ConfigError",
    "Thresholds",  # noqa: F822 - composed from the registry by __getattr__
    "Verdict",
    "check_report",
    "load_report_json",
    "run_checks",
    "thresholds_class",
]


class CheckFailed(SdfError):
    """One or more thresholds were crossed (exit code 1, unlike bad input's 2)."""

    exit_code = 1


@dataclasses.dataclass
class ThresholdsBase(Checked):
    """What every composed ``Thresholds`` can do beyond holding the gates' fields."""

    where_: ClassVar[str] = "check"

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<config>") -> Any:
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def gate_modules() -> list[Any]:
    """The modules that judge a report, in the order their verdicts are listed: every
    registered audit, then every report part (``sdfkit.report.parts``)."""
    from sdfkit.audits import AUDITS
    from sdfkit.report.parts import PARTS

    return [importlib.import_module(m) for m in [*AUDITS.values(), *PARTS.values()]]


_composed: dict[tuple[str, ...], type] = {}


def thresholds_class() -> type:
    """``Thresholds`` for the registry as it stands: one dataclass with the fields of every
    gate module's ``Gates``, in registry order (cached per registry)."""
    modules = gate_modules()
    key = tuple(m.__name__ for m in modules)
    if key not in _composed:
        gates = [m.Gates for m in modules if getattr(m, "Gates", None) is not None]
        # dataclass fields run from the last base to the first: reversed, they read in
        # registry order; ThresholdsBase last gives from_mapping, to_dict and where_.
        cls = type(
            "Thresholds",
            (*reversed(gates), ThresholdsBase),
            {"__module__": __name__, "__qualname__": "Thresholds", "__doc__": _DOC},
        )
        _composed[key] = dataclasses.dataclass(cls)
    return _composed[key]


_DOC = """Limits ``sdf check`` enforces (every audit's ``Gates``); ``None`` leaves a figure
unchecked."""


def __getattr__(name: str) -> Any:
    if name == "Thresholds":  # composed on first use, from the registry
        return thresholds_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_checks(report: dict[str, Any], thresholds: Any) -> CheckResult:
    """Every configured threshold against the figures of a report.json: each gate module's
    ``verdicts``, in registry order.

    A check with nothing to measure (its audit saw no documents) is NOT RUN, never a pass."""
    out = CheckResult()
    for module in gate_modules():
        verdicts = getattr(module, "verdicts", None)
        if verdicts is not None:
            out.verdicts += verdicts(report, thresholds)
    return out


def load_report_json(path: str | Path) -> dict[str, Any]:
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


def check_report(report: dict[str, Any], thresholds: Any) -> CheckResult:
    """Run the checks and raise ``CheckFailed`` (exit code 1) naming every breach."""
    result = run_checks(report, thresholds)
    if result.breaches:
        raise CheckFailed(
            f"{len(result.breaches)} threshold(s) breached:\n"
            + "\n".join(v.line() for v in result.breaches)
        )
    return result
