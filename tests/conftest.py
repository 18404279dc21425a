"""Shared fixtures: a temporary corpus, a CLI runner, and no network, telemetry or keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SDF_PROGRESS", "0")
os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's keys or corpus."""
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "TINKER_API_KEY", "SDF_CORPUS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def store(tmp_path: Path):
    from sdfkit.store.catalog import Store

    return Store(tmp_path / "corpus")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``sdf`` in-process from a temporary working directory: ``cli("sql", "...")``."""
    from typer.testing import CliRunner

    from sdfkit.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, expect: int | None = 0):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output)
        return result

    return run


@pytest.fixture
def example_universe() -> Path:
    return EXAMPLES / "universes" / "eu_ts_trycatch.md"


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray with 2 CPUs for the whole session (start-up costs seconds, not per test).

    Workers get tests/ and src/ on PYTHONPATH so test-only stages import there too.
    """
    pytest.importorskip("ray", reason="Ray is the optional extra sdfkit[ray]")
    tests = Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(tests), str(tests.parent / "src"), os.environ.get("PYTHONPATH", "")]
    )
    os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "120")
    os.environ["SDF_RAY_TMP"] = str(tmp_path_factory.mktemp("ray"))
    from sdfkit.engine.ray_data import ray_session

    with ray_session(num_cpus=2) as ray:
        yield ray


@pytest.fixture(scope="session")
def minilm_stage():
    """The diversity audit's embedding stage with the offline MiniLM loaded once per session."""
    from sdfkit.audits.diversity import EmbeddingStage

    stage = EmbeddingStage(precision="fp32")
    stage.setup()
    stage._ready = True
    return stage
