"""The audit registry: an audit is one module and one line of ``sdfkit.audits.AUDITS``, and
``sdf audit``, ``sdf report`` (JSON and HTML) and ``sdf check`` find it there."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from sdfkit import audits
from sdfkit.audits import AUDITS, Command
from sdfkit.report.check import run_checks, thresholds_class
from sdfkit.report.verdicts import Verdict
from sdfkit.store.ingest import build_documents

WIDGETS = '''
"""A made-up audit: documents with at least ``min_words`` words that mention a widget."""

from dataclasses import dataclass, field
from typing import ClassVar

from sdfkit.audits import AuditResult, Command
from sdfkit.report.verdicts import max_verdict, not_run
from sdfkit.settings import Checked, at_least


@dataclass
class Config(Checked):
    where_: ClassVar[str] = "audits.widgets"
    min_words: int = field(default=3, metadata=at_least(1))


def run(store, config=None, engine=None):
    config = config or Config()
    with store.connect() as con:
        (n, k) = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE text ILIKE '%widget%' "
            "AND len(string_split(text, ' ')) >= ?) FROM documents",
            [config.min_words],
        ).fetchone()
    return AuditResult("widgets", {"documents": n, "widget_documents": k})


JSON_KEY = "widget_figures"
TITLE = "Widgets: a test audit"
COMMAND = Command(help="Documents that mention a widget.", options={"min_words": "Least words."})


def section(f):
    return f'<p class="widgets">widget documents: {f["widget_documents"]}</p>'


@dataclass
class Gates(Checked):
    where_: ClassVar[str] = "check"
    max_widget_documents: int | None = field(default=None, metadata=at_least(0))


def verdicts(report, thresholds):
    limit = thresholds.max_widget_documents
    if limit is None:
        return []
    fig = report.get(JSON_KEY)
    if not isinstance(fig, dict):
        return [not_run("max_widget_documents", "widgets", limit)]
    return [max_verdict("max_widget_documents", "corpus", fig["widget_documents"], limit)]


def summary(result):
    return [f"widget documents: {result.figures['widget_documents']}"]
'''

#: Gates on by default that belong to audits this test does not run.
OTHER_GATES_OFF = (
    "  max_anti_universe_documents: null\n"
    "  max_name_doc_share: null\n"
    "  max_top5_names_doc_share: null\n"
)


@pytest.mark.parametrize("name", list(AUDITS))
def test_every_registered_audit_provides_all_its_parts(name):
    module = audits.module(name)
    for part in ("Config", "run", *audits.PARTS):
        assert hasattr(module, part), f"audit {name} has no {part}"
    assert isinstance(module.JSON_KEY, str) and module.JSON_KEY
    assert isinstance(module.TITLE, str) and module.TITLE
    assert isinstance(module.COMMAND, Command) and module.COMMAND.help
    config_fields = {f.name for f in dataclasses.fields(module.Config)}
    assert set(module.COMMAND.options) <= config_fields  # every flag sets a real setting
    assert isinstance(module.section({}), str)  # a section draws even from empty figures
    thresholds = thresholds_class()()
    got = module.verdicts({}, thresholds)
    assert isinstance(got, list) and all(isinstance(v, Verdict) for v in got)
    # an audit missing from the report never passes a gate of its own that is on
    assert all(v.status == "not run" for v in got)
    if module.Gates is not None:
        gates = {f.name for f in dataclasses.fields(module.Gates)}
        assert gates <= {f.name for f in dataclasses.fields(thresholds)}
    assert callable(module.summary)


def test_no_two_audits_share_a_json_key_or_a_threshold():
    keys = [audits.json_key(n) for n in AUDITS]
    assert len(set(keys)) == len(keys)
    gates = [
        f.name
        for n in AUDITS
        if (g := audits.module(n).Gates) is not None
        for f in dataclasses.fields(g)
    ]
    assert len(set(gates)) == len(gates)
    assert len(dataclasses.fields(thresholds_class())) == len(gates) + 1  # + the evaluation's


@pytest.fixture
def widgets(tmp_path, monkeypatch):
    """The made-up audit, registered by its one line and nothing else."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "widgets_audit.py").write_text(WIDGETS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(AUDITS, "widgets", "widgets_audit")
    return "widgets"


@pytest.fixture
def widget_corpus(store):
    rows = [
        {"text": "a widget here for sure", "concept": "c", "doc_type": "memo"},
        {"text": "one widget", "concept": "c", "doc_type": "memo"},
        {"text": "nothing to see", "concept": "c", "doc_type": "faq"},
    ]
    store.append("documents_raw", build_documents(rows))
    return store


def test_a_new_audit_module_gets_its_command_with_options_from_its_config(
    widgets, widget_corpus, cli
):
    listed = cli("audit", "--help").output
    assert "widgets" in listed and "Documents that mention a widget." in listed
    helped = cli("audit", "widgets", "--help").output
    assert "--min-words" in helped and "Least words." in helped and "3" in helped
    out = cli("audit", "widgets", "--corpus", widget_corpus.root).output
    assert "widget documents: 1" in out  # min_words 3 by default: "one widget" is too short
    out = cli("audit", "widgets", "--min-words", "2", "--corpus", widget_corpus.root).output
    assert "widget documents: 2" in out
    bad = cli("audit", "widgets", "--min-words", "0", "--corpus", widget_corpus.root, expect=2)
    assert "min_words" in bad.output and "Traceback" not in bad.output


def test_a_new_audit_module_reaches_report_json_html_and_check(
    widgets, widget_corpus, cli, tmp_path
):
    project = tmp_path / "sdfkit.yaml"
    project.write_text("check:\n  max_widget_documents: 0\n" + OTHER_GATES_OFF)
    rep = cli("report", "--only", "widgets", "--corpus", widget_corpus.root, expect=None)
    data = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert data["widget_figures"] == {"documents": 3, "widget_documents": 1}
    assert data["audits"]["widgets"]["status"] == "ok"
    assert data["thresholds"]["max_widget_documents"] == 0
    (verdict,) = data["checks"]
    assert (verdict["check"], verdict["status"], verdict["figure"]) == (
        "max_widget_documents",
        "fail",
        1.0,
    )
    assert "widgets" in rep.output
    page = (tmp_path / "reports" / "report.html").read_text()
    assert '<section id="widgets"><h2>Widgets: a test audit</h2>' in page
    assert '<p class="widgets">widget documents: 1</p>' in page
    assert '<a href="#widgets">Widgets</a>' in page
    breach = cli("check", expect=1)
    assert "max_widget_documents" in breach.output
    project.write_text("check:\n  max_widget_documents: 5\n" + OTHER_GATES_OFF)
    assert "all 1 checks pass" in cli("check").output
    project.write_text("check:\n  max_widget_documents: -1\n")
    bad = cli("check", expect=2)
    assert "max_widget_documents" in bad.output


def test_checks_follow_the_registry_not_a_list_in_check_py(widgets):
    thresholds = thresholds_class()(max_widget_documents=2)
    assert typing.get_type_hints(type(thresholds))["max_widget_documents"] == int | None
    missing = run_checks({}, thresholds).verdicts
    assert ("max_widget_documents", "not run") in {(v.check, v.status) for v in missing}
    report = {"widget_figures": {"documents": 9, "widget_documents": 3}}
    (v,) = [
        v for v in run_checks(report, thresholds).verdicts if v.check.endswith("widget_documents")
    ]
    assert (v.status, v.figure, v.threshold) == ("fail", 3.0, 2)
