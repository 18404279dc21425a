"""Report parts beyond the audits, by module name, in page order.

Each part module has ``add(store, data)`` (its report.json keys), ``present(report)``,
``section(report)`` (its HTML), ``ANCHOR`` and ``LABEL`` (its navigation link), and may have
``Gates`` and ``verdicts(report, thresholds)`` (its gates of ``sdf check``). Listed by name, so
the report imports none of them at module level (the evaluation imports the report's helpers).
"""

from __future__ import annotations

import importlib
from typing import Any

PARTS: dict[str, str] = {"evaluation": "sdfkit.evaluate.report_part"}


def report_parts() -> list[Any]:
    """The modules of ``PARTS``, in order."""
    return [importlib.import_module(m) for m in PARTS.values()]
