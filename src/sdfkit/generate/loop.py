"""The collapse loop: replace what the audits excluded, audit again, until ``sdf check`` passes.

``sdf generate UNIVERSE... --replace-excluded --max-rounds N`` runs, per round:
replacements for the excluded documents of those universes (``generate.replace_excluded``)
→ every audit of the report (``report.build``, with the universe files given, so the
anti-universe audit reads the bans as they are now) → the thresholds of ``sdf check``. It
stops when the check passes, when nothing is left to replace, or after N rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.generate.documents import GenerateConfig, ReplaceResult
    from sdfkit.generate.universe import Universe
    from sdfkit.report.build import ReportConfig
    from sdfkit.store.catalog import Store


@dataclass
class Round:
    number: int
    replace: ReplaceResult
    violating_documents: int | None = None
    checks: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.checks > 0 and not self.failed


def replace_loop(
    universes: list[Universe],
    store: Store,
    gen_config: GenerateConfig,
    report_config: ReportConfig,
    max_rounds: int = 1,
    *,
    audit: bool = True,
    backend: str = "auto",
    client: Any = None,
    prices: Any = None,
    log: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[Round]:
    """Replace → audit → check, up to ``max_rounds`` times (see the module docstring)."""
    from sdfkit.errors import SdfError
    from sdfkit.generate.documents import replace_excluded
    from sdfkit.report.build import build

    if max_rounds < 1:
        raise SdfError("--max-rounds must be at least 1")
    echo = echo or (lambda m: None)
    rounds: list[Round] = []
    for number in range(1, max_rounds + 1):
        res = replace_excluded(
            universes, store, gen_config, client=client, backend=backend, prices=prices, log=log
        )
        current = Round(number, res)
        rounds.append(current)
        echo(f"round {number}: {res.summary()}")
        if not res.requests or not audit:
            break
        rep = build(store, report_config)
        au = rep.data.get("anti_universe") or {}
        current.violating_documents = au.get("violating_documents")
        current.checks = len(rep.verdicts)
        current.failed = [v.line() for v in rep.verdicts if not v.passed]
        echo(
            f"round {number}: audited: {current.violating_documents} documents violate their "
            f"anti-universe; checks {current.checks - len(current.failed)} pass, "
            f"{len(current.failed)} fail"
        )
        for line in current.failed:
            echo(f"  {line}")
        if current.passed:
            break
    return rounds
