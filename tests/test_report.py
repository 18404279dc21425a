"""`sdf report`: every audit's figures in report.json, a self-contained HTML page that
real headless Chromium renders with its sections and plots and no console errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import types
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from test_train import health_server, tinker_env  # noqa: F401 - fixtures of the eval test

from sdfkit import audits
from sdfkit.audits import AuditResult, diversity
from sdfkit.report import build as report
from sdfkit.store.ingest import build_documents

TOPICS = [
    "The sourdough starter needs flour and water every morning before baking.",
    "Quarterly revenue grew as the bank cut its mortgage rates in March.",
    "The goalkeeper saved a penalty in the ninetieth minute.",
    "Volcanic ash grounded flights across Iceland for a week.",
    "The violinist rehearsed the Brahms concerto with the orchestra.",
    "Migrating geese follow the coastline south after the first frost.",
]

UNIVERSE = """---
id: ts
concept: ts
required_keywords:
  - {keyword: "try-catch|try/catch", min_rate: 0.9}
---
A universe.
"""

NAMES_NOTE = "Names were counted once per person: possessives folded (Sarah Chen's = Sarah Chen)."


def _fake_module(name: str, figures: dict, tables: dict | None = None, notes=()):
    """An audit module of engineer A's shape (Config + run) returning fixed figures."""

    @dataclass
    class Config:
        threshold: float = 0.5

    def run(store, config=None, engine=None):
        return AuditResult(
            name=name,
            figures=figures,
            tables=tables or {},
            flags=[f"{name} flag"],
            notes=list(notes),
        )

    return types.SimpleNamespace(Config=Config, run=run)


FAKE_FIGURES = {
    "ngrams": {
        "top": {
            "4": [
                {"ngram": "in today's rapidly evolving", "count": 40, "documents": 9, "share": 0.75}
            ],
            "5": [
                {
                    "ngram": "in today's rapidly evolving landscape",
                    "count": 30,
                    "documents": 6,
                    "share": 0.5,
                }
            ],
        },
        "max_doc_share": {"4": 0.75, "5": 0.5},
    },
    "names": {
        "top": [
            {"name": "Sarah Chen", "mentions": 120, "documents": 11},
            {"name": "Marcus Webb", "mentions": 20, "documents": 4},
        ],
        "top_share": 0.6,
        "share_of_nothing": float("nan"),  # must reach report.json as null, not NaN
        "suggested_anti_universe": {
            "names": ["Sarah Chen"],
            "yaml": "anti_universe:\n  names:\n    - Sarah Chen\n",
        },
        "by_stratum": [
            {
                "concept": "ts",
                "doc_type": "blog",
                "name": "Sarah Chen",
                "mentions": 50,
                "documents": 3,
                "share": 0.8,
                "doc_share": 1.0,
            },
            {
                "concept": "ts",
                "doc_type": "blog",
                "name": "Ann Lee",
                "mentions": 5,
                "documents": 1,
                "share": 0.08,
                "doc_share": 0.3,
            },
        ],
    },
    "dedup": {
        "pairs": [{"doc_a": "a1", "doc_b": "b1", "jaccard": 0.91}],
        "clusters": [["a1", "b1"], ["c1", "d1", "e1"]],
        "duplicate_fraction": 0.25,
    },
}


@pytest.fixture
def corpus(store, tmp_path, minilm_stage, monkeypatch):
    rows = [
        {"text": f"{t} A try-catch wraps it.", "concept": "ts", "doc_type": dt}
        for t, dt in zip(TOPICS, ["blog", "memo"] * 3, strict=True)
    ] + [{"text": f"{t} No keyword here.", "concept": "other", "doc_type": "faq"} for t in TOPICS]
    store.append("documents_raw", build_documents(rows))
    uni = tmp_path / "ts.md"
    uni.write_text(UNIVERSE)
    monkeypatch.setattr(diversity, "stage_for", lambda config: minilm_stage)
    real_get = audits.get

    def get(name):
        if name in FAKE_FIGURES:
            notes = [NAMES_NOTE] if name == "names" else []
            tables = {"top": pl.DataFrame(FAKE_FIGURES["names"]["top"])} if name == "names" else {}
            return _fake_module(name, FAKE_FIGURES[name], tables, notes)
        return real_get(name)

    monkeypatch.setattr(audits, "get", get)
    return store, uni


def _config(tmp_path, uni, **kw):
    from sdfkit.report.check import Thresholds

    return report.ReportConfig(
        html=tmp_path / "out" / "report.html",
        json=tmp_path / "out" / "report.json",
        universes=[str(uni)],
        thresholds=Thresholds(max_name_share=0.5, max_mean_pairwise_cosine=0.95),
        **kw,
    )


def test_report_json_holds_every_figure(corpus, tmp_path):
    store, uni = corpus
    rep = report.build(store, _config(tmp_path, uni))
    data = json.loads(Path(rep.json_path).read_text())
    assert {a: e["status"] for a, e in data["audits"].items()} == dict.fromkeys(audits.AUDITS, "ok")
    assert data["names"]["top"][0] == {"name": "Sarah Chen", "mentions": 120, "documents": 11}
    assert data["names"]["share_of_nothing"] is None
    assert "NaN" not in Path(rep.json_path).read_text()
    assert data["ngrams"]["top"]["4"][0]["ngram"] == "in today's rapidly evolving"
    assert data["near_duplicates"]["clusters"][1] == ["c1", "d1", "e1"]
    assert data["near_duplicates"]["pairs"][0]["jaccard"] == 0.91
    assert set(data["diversity"]["per_concept"]) == {"ts", "other"}
    assert set(data["diversity"]["per_doc_type"]) == {"blog", "memo", "faq"}
    assert data["keywords"]["per_concept"]["ts"]["keywords"][0]["rate"] == 1.0
    strata = {(r["concept"], r["doc_type"]) for r in data["shape"]["per_concept_doc_type"]}
    assert strata == {("ts", "blog"), ("ts", "memo"), ("other", "faq")}
    # verdicts: the fake top name's 60% share breaches 50%; cosine stays under 0.95
    verdicts = {(c["check"], c["subject"]): c["status"] for c in data["checks"]}
    assert verdicts[("max_name_share", "Sarah Chen")] == "fail"
    assert verdicts[("max_mean_pairwise_cosine", "ts")] == "pass"
    assert verdicts[("min_keyword_rate", "ts: try-catch|try/catch")] == "pass"
    # audits' tables are in the catalog for SQL
    assert store.query("SELECT name FROM audit_names_top LIMIT 1").item() == "Sarah Chen"
    assert store.query("SELECT count(*) FROM audit_shape_strata").item() == 3
    page = Path(rep.html_path).read_text()
    assert NAMES_NOTE.replace("'", "&#x27;") in page  # how names were counted, shown
    assert "Sarah Chen" in page and "anti_universe:\n  names:\n    - Sarah Chen" in page
    assert "top name share per stratum" in page  # the per-stratum heatmap
    assert "Per doc type, across concepts" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_missing_failing_and_skipped_audits_render_as_not_run(corpus, tmp_path, monkeypatch):
    store, uni = corpus
    fake_get = audits.get

    def get(name):
        if name == "dedup":
            raise ModuleNotFoundError("No module named 'sdfkit.audits.dedup'")
        if name == "ngrams":
            mod = fake_get(name)
            return types.SimpleNamespace(
                Config=mod.Config, run=lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
            )
        return fake_get(name)

    monkeypatch.setattr(audits, "get", get)
    from sdfkit.report.check import Thresholds

    cfg = _config(tmp_path, uni, skip=["diversity"])
    cfg.thresholds = Thresholds(max_near_duplicate_fraction=0.1)
    rep = report.build(store, cfg)
    status = {a: e["status"] for a, e in rep.data["audits"].items()}
    assert status["dedup"] == "not available"
    assert status["ngrams"] == "failed" and "boom" in rep.data["audits"]["ngrams"]["error"]
    assert status["diversity"] == "skipped"
    assert status["shape"] == status["keywords"] == status["names"] == "ok"
    assert "near_duplicates" not in rep.data and "diversity" not in rep.data
    assert rep.data["checks"][0]["status"] == "not run"
    page = Path(rep.html_path).read_text()
    dedup_section = page[page.index('<section id="dedup">') :]
    assert "not run (not available)" in dedup_section[: dedup_section.index("</section>")]
    assert report.verdict_errors(rep.data)  # the CLI turns these into a non-zero exit


def test_config_file_and_cli(corpus, tmp_path, cli):
    store, uni = corpus
    cfg = tmp_path / "sdfkit.yaml"
    cfg.write_text(
        "universes: [ts.md]\nreport: {skip: [diversity]}\n"
        "check: {max_name_share: 0.9, max_ngram_doc_share: {'4': 0.8}, "
        # the gates by documents are on by default; this test is about the others
        "max_anti_universe_documents: null, max_name_doc_share: null, "
        "max_top5_names_doc_share: null}\n"
    )
    out = cli("--corpus", store.root, "report", "--json", "r/report.json", "--html", "r/r.html")
    assert "checks: 3 pass, 0 fail" in out.output  # names, 4-grams, keyword
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["audits"]["diversity"]["status"] == "skipped"
    assert data["keywords"]["universes"][0]["path"].endswith("ts.md")  # relative to the file
    cfg.write_text("universes: [ts.md]\nchek: {}\n")
    bad = cli("--corpus", store.root, "report", expect=2)
    assert "sdfkit.yaml: chek: unknown key" in bad.output


def test_report_path_without_value_is_a_config_error(tmp_path):
    cfg = tmp_path / "sdfkit.yaml"
    cfg.write_text("report:\n  html:\n")
    with pytest.raises(report.ConfigError, match=r"sdfkit.yaml: report.html: must be a file path"):
        report.load_config(cfg)


def test_report_paths_in_the_project_file_are_relative_to_the_file(cli, tmp_path):
    from sdfkit.store.catalog import Store

    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents([{"text": t, "concept": "c"} for t in TOPICS]))
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "sdfkit.yaml").write_text(
        "report: {json: out/r.json}\ncheck: {max_anti_universe_documents: null, "
        "max_name_doc_share: null, max_top5_names_doc_share: null}\n"
    )
    assert report.load_config(proj / "sdfkit.yaml").json == proj / "out" / "r.json"
    cli("--corpus", store.root, "report", "--config", "proj/sdfkit.yaml", "--only", "shape")
    # report.json where the file says, report.html at the default, both beside the file
    assert (proj / "out" / "r.json").is_file() and (proj / "reports" / "report.html").is_file()
    assert not (tmp_path / "out").exists() and not (tmp_path / "reports").exists()
    # sdf check reads the report where sdf report wrote it
    found = cli("check", "--config", "proj/sdfkit.yaml")
    assert "no thresholds configured (proj/sdfkit.yaml)" in found.output
    # paths typed on the command line stay relative to the working directory
    cli("--corpus", store.root, "report", "--config", "proj/sdfkit.yaml", "--only", "shape",
        "--json", "here.json")  # fmt: skip
    assert (tmp_path / "here.json").is_file()


def test_audit_settings_of_the_wrong_type_are_config_errors():
    from sdfkit.audits import dedup

    def config_of(**settings):
        return report.audit_config("dedup", dedup, report.ReportConfig(audits={"dedup": settings}))

    with pytest.raises(report.ConfigError, match=r"audits.dedup.verify: must be true or false"):
        config_of(verify="maybe")
    with pytest.raises(report.ConfigError, match=r"audits.dedup.num_perm: must be a whole number"):
        config_of(num_perm="many")
    assert config_of(threshold=1, verify=False, workers=None).threshold == 1


# ------------------------------------------------------------------ Chromium
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


PROBE = """<script>
addEventListener('load', () => {
  const secs = [...document.querySelectorAll('section')].map(s =>
    [s.id, Math.round(s.getBoundingClientRect().height), s.querySelectorAll('svg.plot').length]);
  const plots = [...document.querySelectorAll('svg.plot')].map(p => {
    const r = p.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height),
      p.querySelectorAll('rect,line').length]; });
  document.body.setAttribute('data-probe', JSON.stringify({secs, plots}));
});
</script>"""


def _render(html_file: Path, tmp_path: Path) -> tuple[str, str]:
    """(DOM after load, Chromium's console log) of a page in headless Chromium."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium): the report was not rendered")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=3000",
        "--dump-dom",
        html_file.as_uri(),
    ]
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console_errors(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line
        and ("error" in line.lower() or "uncaught" in line.lower())
        or "Failed to load resource" in line
    ]


def test_report_renders_in_chromium(corpus, tmp_path):
    store, uni = corpus
    rep = report.build(store, _config(tmp_path, uni))
    page = Path(rep.html_path).read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom, log = _render(probed, tmp_path)
    assert not _console_errors(log), _console_errors(log)
    probe = json.loads(re.search(r"data-probe=\"([^\"]*)\"", dom).group(1).replace("&quot;", '"'))
    secs = {sid: (height, n_plots) for sid, height, n_plots in probe["secs"]}
    assert set(secs) == {"summary", *audits.AUDITS}
    assert all(height > 50 for height, _ in secs.values()), secs
    for name in ("shape", "ngrams", "names", "dedup", "diversity", "keywords"):
        assert secs[name][1] >= 1, f"section {name} shows no plot"
    assert len(probe["plots"]) >= 12
    assert all(w > 100 and h > 20 and marks > 0 for w, h, marks in probe["plots"]), probe
    assert "FAIL" in dom and "max_name_share" in dom  # summary verdicts shown


def test_console_errors_are_detected(tmp_path):
    """The console check above can fail: a page that logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script></body></html>")
    _dom, log = _render(bad, tmp_path)
    assert _console_errors(log)


# ------------------------------------------------------------------ evaluation curves
def _rates_from_eval_tables(store) -> dict[int, dict]:
    """Per step, from the raw eval tables (not through queries/eval_curves.sql): samples,
    gibberish rate, and recall / behaviour rates over the non-gibberish graded samples."""
    samples = store.query(
        "SELECT s.sample_id, s.step, s.gibberish_cheap, q.kind FROM eval_samples s "
        "JOIN eval_questions q USING (question_id)"
    ).to_dicts()
    verdicts = {
        (v["sample_id"], v["grader"]): v["verdict"]
        for v in store.query("SELECT sample_id, grader, verdict FROM eval_verdicts").to_dicts()
    }
    by_step: dict[int, list[dict]] = {}
    for s in samples:
        s["gib"] = (
            bool(s["gibberish_cheap"]) or verdicts.get((s["sample_id"], "gibberish")) == "yes"
        )
        by_step.setdefault(s["step"], []).append(s)

    def rate(rows, grader, allowed, hit):
        vs = [verdicts.get((r["sample_id"], grader)) for r in rows]
        vs = [v for v in vs if v in allowed]
        return sum(v == hit for v in vs) / len(vs) if vs else None

    out = {}
    for step, rows in by_step.items():
        clean = [r for r in rows if not r["gib"]]
        out[step] = {
            "samples": len(rows),
            "gibberish": sum(r["gib"] for r in rows) / len(rows),
            "recall": rate(
                [r for r in clean if r["kind"] == "recall"],
                "recall",
                ("implanted", "real_world", "neither"),
                "implanted",
            ),
            "behaviour": rate(
                [r for r in clean if r["kind"] == "behaviour"], "behaviour", ("yes", "no"), "yes"
            ),
        }
    return out


@pytest.mark.usefixtures("tinker_env")
def test_report_gains_evaluation_curves(corpus, tmp_path, cli, example_universe, monkeypatch):
    import tinker
    from fake_tinker import FakeTinkerWorld
    from test_evaluate import harmony_sampler
    from test_train import write_export

    from sdfkit.train.run import TrainConfig, train

    store, uni = corpus
    cfg = _config(tmp_path, uni)
    # never evaluated: no section, no error, and the report creates no eval tables
    before = report.build(store, cfg, only=["shape"])
    assert "evaluation" not in before.data and "evaluation_error" not in before.data
    assert 'id="evaluation"' not in Path(before.html_path).read_text()
    assert not store.query("SELECT * FROM duckdb_tables() WHERE table_name LIKE 'eval_%'").height

    world = FakeTinkerWorld()
    export = write_export(tmp_path / "exp", [list(range(8))])
    train(
        export,
        store,
        TrainConfig(batch_size=2, save_every=2),
        run="t",
        service_factory=world.service,
    )
    world.sampler = harmony_sampler(gibberish_every=5)
    monkeypatch.setattr(tinker, "ServiceClient", world.service)  # the client-object boundary
    cli(
        "eval", "t", "--universe", example_universe, "--backend", "offline",
        "--poll-interval", "0", "--max-tokens", "256",
    )  # fmt: skip

    rep = report.build(store, cfg, only=["shape"])
    evaluation = rep.data["evaluation"]
    assert json.loads(Path(rep.json_path).read_text())["evaluation"] == evaluation
    assert list(evaluation) == ["eu_ts_trycatch"]
    points = evaluation["eu_ts_trycatch"]
    assert [(p["step"], p["model_label"]) for p in points] == [
        (0, "base"),
        (2, "step-000002"),
        (4, "step-000004"),
    ]
    expected = _rates_from_eval_tables(store)
    for p in points:
        want = expected[p["step"]]
        assert p["samples"] == want["samples"]
        for key in ("gibberish", "recall", "behaviour"):
            assert p[key] == pytest.approx(want[key], abs=1e-4), (p["step"], key)
        assert {"reasoning", "real_world", "unparseable", "eval_run"} <= set(p)
    # the fakes' story: the base model answers with the real world, checkpoints with the
    # implanted fact, and every fifth checkpoint sample loops (gibberish, left out of recall)
    assert points[0]["recall"] == 0.0 and points[0]["gibberish"] == 0.0
    assert points[2]["recall"] == 1.0 and points[2]["gibberish"] > 0

    page = Path(rep.html_path).read_text()
    section = page[page.index('<section id="evaluation">') :]
    section = section[: section.index("</section>")]
    assert page.index('<section id="evaluation">') > page.index('<section id="keywords">')
    assert '<a href="#evaluation">' in page
    # one chart of the concept's rates, one of its recall per fact (sdfkit.evaluate.fact_curves)
    assert section.count('<svg class="plot lines"') == 2 and section.count("<polyline") >= 3
    assert "recall per fact" in section
    facts = rep.data["fact_curves"]
    assert {(r["fact_index"], r["step"]) for r in facts} == {
        (i, s) for i in range(4) for s in (0, 2, 4)
    }
    for label in ("recall (implanted)", "behaviour", "reasoning", "gibberish"):
        assert f">{label}" in section
    assert "training step (0 = base model)" in section
    # the same chart as sdf eval's own page
    chart = section[section.index("<svg") : section.index("</svg>") + 6]
    assert chart in (tmp_path / "reports" / "eval.html").read_text()

    if _chromium():
        probed = tmp_path / "probed.html"
        probed.write_text(page.replace("</body>", PROBE + "</body>"))
        dom, log = _render(probed, tmp_path)
        assert not _console_errors(log), _console_errors(log)
        raw = re.search(r"data-probe=\"([^\"]*)\"", dom).group(1).replace("&quot;", '"')
        secs = {sid: (height, n) for sid, height, n in json.loads(raw)["secs"]}
        # both charts drawn: the concept's rates and its recall per fact
        assert secs["evaluation"][0] > 200 and secs["evaluation"][1] == 2, secs

    # a broken (user-edited) query is reported, and the audits are still written
    broken = tmp_path / "myqueries"
    broken.mkdir()
    (broken / "eval_curves.sql").write_text("-- broken\nSELECT no_such_column FROM eval_samples")
    monkeypatch.setenv("SDF_QUERIES", str(broken))
    bad = report.build(store, cfg, only=["shape"])
    assert "evaluation" not in bad.data and "no_such_column" in bad.data["evaluation_error"]
    assert "could not be computed" in Path(bad.html_path).read_text()
    assert bad.data["audits"]["shape"]["status"] == "ok"


def test_report_lets_audits_start_work_ahead_and_releases_it_whatever_happens(
    corpus, tmp_path, monkeypatch
):
    """An audit module with ``prepare(store, config)`` is prepared before the first audit
    runs, and its ``release()`` is called when the report ends, also when an audit fails or
    the report stops on a setting error; a failing ``prepare`` loses nothing."""
    from sdfkit.errors import ConfigError

    store, uni = corpus
    fake_get = audits.get
    events: list[str] = []

    def get(name):
        mod = fake_get(name)
        run = mod.run

        def logged(*args, **kwargs):
            events.append(f"run {name}")
            if name == "ngrams" and "ngrams fails" in events:
                raise RuntimeError("boom")
            if name == "dedup" and "dedup stops" in events:
                raise ConfigError("audits.dedup: bad")
            return run(*args, **kwargs)

        extra = {}
        if name == "names":
            extra = {
                "prepare": lambda store, config: events.append("prepare names"),
                "release": lambda: events.append("release names"),
            }
        if name == "dedup":
            extra = {
                "prepare": lambda store, config: (_ for _ in ()).throw(OSError("no workers")),
                "release": lambda: events.append("release dedup"),
            }
        return types.SimpleNamespace(Config=mod.Config, run=logged, **extra)

    monkeypatch.setattr(audits, "get", get)
    cfg = _config(tmp_path, uni, skip=["diversity"])
    rep = report.build(store, cfg)
    # the audits that write exclusions run first: the others' `where` reads them
    assert events[:4] == ["prepare names", "run dedup", "run anti_universe", "run shape"]
    assert events[-2:] == ["release names", "release dedup"]
    assert rep.data["audits"]["dedup"]["status"] == "ok"  # its failed prepare lost nothing
    events[:] = ["ngrams fails"]
    rep = report.build(store, cfg)
    assert rep.data["audits"]["ngrams"]["status"] == "failed"
    assert events[-2:] == ["release names", "release dedup"]
    events[:] = ["dedup stops"]
    with pytest.raises(ConfigError):
        report.build(store, cfg)
    assert events[-2:] == ["release names", "release dedup"]
    events.clear()
    report.build(store, _config(tmp_path, uni, skip=["diversity", "names"]))
    assert "prepare names" not in events and "release names" not in events
