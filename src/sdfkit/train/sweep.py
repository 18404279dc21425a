"""Fixed-budget sweeps: the seed's epoch, DOCTAG and webtext comparisons as one command.

The seed write-up held the token budget fixed (~20.5M tokens) and compared 1, 3, 5 and 7
epochs: E epochs over 1/E of the documents. A sweep file names a base selection and a list of
variants (epochs and export switches). For each variant ``prepare`` makes

- a selection drawn from the base selection's documents with 1/E of its documents and 1/E
  of its tokens per concept (or per section, as the base was balanced), still sampled per
  concept × doc type, so E passes train on the base's token budget (within ``tolerance``);
  variants with the same epochs share one selection, so e.g. DOCTAG on/off differ only in
  the switch;
- its export (``sdfkit.export.shards``) with the variant's switches;
- its training plan (``sdfkit.train.run.plan_run``): documents, tokens, total steps.

``sweep.json`` in the sweep's folder records the budget and, per variant, the exact counts
(documents, selection tokens, tokens trained = epochs × selection tokens, the export's own
token totals, the selection's content hash), written atomically. ``run`` then trains and
evaluates each variant on Tinker (resumable: rerunning the same sweep resumes every run and
pays nothing twice) and draws every variant's curves on one page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdfkit.errors import SdfError
from sdfkit.store.catalog import Store
from sdfkit.store.durable import write_json_atomic

SWEEP_MANIFEST = "sweep.json"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: Export switches a sweep file may set; ``selection`` and ``epochs`` are the sweep's own.
EXPORT_FIXED = ("selection", "epochs")
#: Path-valued settings, resolved against the sweep file's folder.
EXPORT_PATHS = ("webtext", "chat")


class SweepError(SdfError, ValueError):
    """A sweep file or a variant cannot be used as given; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class VariantSpec(_Strict):
    """One variant: its epochs and the export (and training) switches it changes."""

    name: str = Field(pattern=NAME)
    epochs: int = Field(default=1, ge=1, le=100, strict=True)  # `true` is not 1 epoch
    export: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Strict):
    """A sweep file (YAML): the base selection, shared settings and the variants."""

    name: str = Field(pattern=NAME)
    selection: str = Field(pattern=NAME, description="the base selection: the token budget")
    variants: list[VariantSpec] = Field(min_length=1)
    out: str | None = None  # default: <corpus>/sweeps/<name>
    tolerance: float = Field(default=0.005, gt=0, lt=1)
    seed: int | None = Field(default=None, strict=True)  # default: the base selection's
    export: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    universes: list[str] = Field(default_factory=list)  # for eval prompts and evaluation
    report: str | None = None  # default: reports/sweep-<name>.html
    source_path: str | None = Field(default=None, exclude=True)

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[VariantSpec]) -> list[VariantSpec]:
        seen: set[str] = set()
        for i, var in enumerate(v):
            if var.name in seen:
                raise ValueError(f"item {i}: variant name {var.name!r} is used twice")
            seen.add(var.name)
        return v


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every switch is checked against the config it feeds
    (``ExportConfig``, ``TrainConfig``, ``EvalConfig``) with the file and field named."""
    import yaml

    from sdfkit.settings import load_yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise SweepError(f"{p}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{p}: a sweep file is a mapping (name, selection, variants, ...)")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            msg = (
                "unknown field (check the spelling)"
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            msgs.append(f"field '{_loc(err['loc']) or '(file)'}': {msg}")
        raise SweepError(f"{p}: " + "; ".join(msgs)) from None
    spec.source_path = str(p)
    spec.universes = [_resolve(spec, u) for u in spec.universes]
    for i, u in enumerate(spec.universes):
        if not Path(u).is_file():
            raise SweepError(f"{p}: field 'universes[{i}]': {u}: no such file")
    from sdfkit.llm.tokens import canonical_name
    from sdfkit.train.run import check_tokenizer

    for v in spec.variants:
        ecfg = export_config(spec, v, "check")
        tcfg = train_config(spec, v)
        try:  # what `sdf train` would refuse after the export: refused before any work
            check_tokenizer(canonical_name(ecfg.tokenizer), tcfg)
        except SdfError as exc:
            raise SweepError(f"{p}: field 'variants[{v.name}]': {exc}") from None
    eval_config(spec)
    return spec


def _base_dir(spec: SweepSpec) -> Path:
    return Path(spec.source_path).parent if spec.source_path else Path(".")


def _resolve(spec: SweepSpec, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else _base_dir(spec) / p)


def _build(cls: Any, values: dict[str, Any], where: str, spec: SweepSpec) -> Any:
    """``cls(**values)`` with unknown keys and bad values named by file and field."""
    names = {f.name for f in fields(cls)}
    for k in values:
        if k not in names:
            raise SweepError(
                f"{spec.source_path}: field '{where}.{k}': unknown setting; known: "
                + ", ".join(sorted(names))
            )
    values = dict(values)
    for f in fields(cls):
        if f.name in values:
            where_f = f"{spec.source_path}: field '{where}.{f.name}'"
            values[f.name] = _check_type(f, values[f.name], where_f)
    try:
        return cls(**values)
    except SdfError as exc:
        raise SweepError(f"{spec.source_path}: field '{where}': {exc}") from None
    except TypeError as exc:
        raise SweepError(f"{spec.source_path}: field '{where}': {exc}") from None


#: Plain annotations of the config dataclasses -> (accepted types, what to write).
_SIMPLE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "text"),
}


def _check_type(f: Any, value: Any, where: str) -> Any:
    """A YAML value of the wrong kind (``learning_rate: fast``, ``eos: 1``) named by its field,
    not left to fail as a comparison deep inside the config. A number where text is wanted
    is its text (``checkpoints: 100``)."""
    ann = str(f.type).replace(" ", "")
    optional = ann.endswith("|None")
    kinds = _SIMPLE_TYPES.get(ann.removesuffix("|None"))
    if kinds is None or (value is None and optional):
        return value
    types, label = kinds
    if str in types and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise SweepError(f"{where}: expected {label}, got {value!r}")
    return value


#: Files an export reads mixed-in text from (as ``sdf export`` accepts them).
_TEXT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")


def export_config(spec: SweepSpec, variant: VariantSpec, selection: str) -> Any:
    """The variant's ``ExportConfig``: the sweep's switches, then the variant's."""
    from sdfkit.export.shards import ExportConfig

    values = {**spec.export, **variant.export}
    for k in EXPORT_FIXED:
        if k in values:
            where = f"variants[{variant.name}].export" if k in variant.export else "export"
            raise SweepError(
                f"{spec.source_path}: field '{where}.{k}': set by the sweep "
                "(the variant's epochs and its budget selection), not an export switch"
            )
    for k in EXPORT_PATHS:
        if values.get(k):
            values[k] = _resolve(spec, str(values[k]))
            where = f"variants[{variant.name}].export" if k in variant.export else "export"
            path = Path(values[k])
            if not path.is_file():
                raise SweepError(f"{spec.source_path}: field '{where}.{k}': {path}: no such file")
            if path.suffix.lower() not in _TEXT_SUFFIXES:
                raise SweepError(
                    f"{spec.source_path}: field '{where}.{k}': {path}: use a .jsonl or "
                    ".parquet file"
                )
    if "universes" not in values and spec.universes:
        values["universes"] = [_resolve(spec, u) for u in spec.universes]
    elif "universes" in values:
        values["universes"] = [_resolve(spec, u) for u in values["universes"]]
    cfg = _build(
        ExportConfig,
        {**values, "selection": selection, "epochs": variant.epochs},
        f"variants[{variant.name}].export",
        spec,
    )
    try:
        cfg.check()
    except SdfError as exc:
        raise SweepError(
            f"{spec.source_path}: field 'variants[{variant.name}].export': {exc}"
        ) from None
    return cfg


def train_config(spec: SweepSpec, variant: VariantSpec) -> Any:
    from sdfkit.train.run import TrainConfig

    return _build(
        TrainConfig, {**spec.train, **variant.train}, f"variants[{variant.name}].train", spec
    )


def eval_config(spec: SweepSpec) -> Any:
    from sdfkit.evaluate.recall import EvalConfig

    cfg = _build(EvalConfig, dict(spec.eval), "eval", spec)
    # checked now, not after every variant has trained
    marks = cfg.checkpoints.strip().lower()
    if marks not in ("all", "last", "none", "") and not all(
        m.strip().isdigit() for m in marks.split(",") if m.strip()
    ):
        raise SweepError(
            f"{spec.source_path}: field 'eval.checkpoints': {cfg.checkpoints!r}: use all, last, "
            "none or steps like 100,200"
        )
    return cfg


# ------------------------------------------------------------------ budget and plan


@dataclass
class VariantPlan:
    """What a variant trains on, counted exactly."""

    name: str
    epochs: int
    selection: str
    documents: int  # distinct documents of its selection
    selection_tokens: int  # their n_tokens (one pass)
    tokens: int  # tokens trained: epochs × selection_tokens, the budget quantity
    budget_error: float  # (tokens - budget) / budget
    total_steps: int
    examples: int
    export_dir: str
    export_tokens: int  # every token of the export (all sources, epochs, prefixes, EOS)
    export_sdf_tokens: int
    selection_sha256: str
    train_run: str
    export_tokenizer: str = ""  # the export's; the budget is counted in SweepPlan.tokenizer
    per_group: dict[str, dict[str, int]] = field(default_factory=dict)

    def plan_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epochs": self.epochs,
            "documents": self.documents,
            "tokens": self.tokens,
            "total_steps": self.total_steps,
        }


@dataclass
class SweepPlan:
    sweep: str
    base_selection: str
    balance_by: str
    budget_tokens: int
    budget_documents: int
    out: str
    variants: list[VariantPlan]
    spec: SweepSpec = field(repr=False)
    tokenizer: str = ""  # of the corpus's n_tokens: the unit of the budget

    def to_json(self) -> dict[str, Any]:
        """The ``--dry-run --json`` plan."""
        return {
            "sweep": self.sweep,
            "base_selection": self.base_selection,
            "budget_tokens": self.budget_tokens,
            "variants": [v.plan_json() for v in self.variants],
        }

    def manifest(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "spec_file": self.spec.source_path,
            "base_selection": self.base_selection,
            "balance_by": self.balance_by,
            "budget": {
                "tokens": self.budget_tokens,
                "documents": self.budget_documents,
                "tokenizer": self.tokenizer,
            },
            "tolerance": self.spec.tolerance,
            "variants": [asdict(v) for v in self.variants],
        }

    def describe(self) -> str:
        lines = [
            f"sweep {self.sweep!r}: budget {self.budget_tokens:,} tokens ({self.tokenizer}; "
            f"{self.budget_documents:,} documents of selection {self.base_selection!r} once); "
            f"folder {self.out}",
        ]
        head = ["variant", "epochs", "documents", "tokens", "vs budget", "examples", "steps"]
        rows = [
            [
                v.name,
                str(v.epochs),
                f"{v.documents:,}",
                f"{v.tokens:,}",
                f"{v.budget_error:+.3%}",
                f"{v.examples:,}",
                f"{v.total_steps:,}",
            ]
            for v in self.variants
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        fmt = lambda r: "  ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        lines += [fmt(head), "  ".join("-" * w for w in widths), *map(fmt, rows)]
        return "\n".join(lines)


def _base(store: Store, name: str) -> tuple[Any, dict[str, Any]]:
    """The base selection's report (its achieved documents and tokens are the budget) and
    its config (seed, balance, grade filter)."""
    from sdfkit.export.selection import load_selection_report

    report = load_selection_report(store, name)
    rows = store.query("SELECT config FROM selection_runs WHERE name = ?", [name])
    return report, json.loads(rows["config"][0])


def _selection_sha(store: Store, name: str) -> tuple[str, int, int]:
    df = store.query(
        "SELECT doc_id, n_tokens FROM selections WHERE name = ? ORDER BY doc_id", [name]
    )
    ids = df["doc_id"].to_list()
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return digest, len(ids), int(sum(df["n_tokens"].to_list()))


def default_out(store: Store, spec: SweepSpec) -> Path:
    return Path(_resolve(spec, spec.out)) if spec.out else store.root / "sweeps" / spec.name


def prepare(store: Store, spec: SweepSpec, log: Callable[[str], None] | None = None) -> SweepPlan:
    """Selections, exports and training plans of every variant (contacts no service)."""
    from sdfkit.export.selection import SelectionError, select
    from sdfkit.export.shards import export
    from sdfkit.export.verify import read_manifest
    from sdfkit.llm.tokens import canonical_name
    from sdfkit.train.run import plan_run

    say = log or (lambda _m: None)
    try:
        report, base_cfg = _base(store, spec.selection)
    except SelectionError as exc:
        raise SweepError(f"{spec.source_path}: field 'selection': {exc}") from None
    if report.status != "ok":
        say(
            f"note: selection {spec.selection!r} fell short of its targets; the budget is what "
            "it holds"
        )
    balance_by = base_cfg.get("balance_by", "concept")
    budget = {c.concept: (c.docs, c.tokens) for c in report.concepts}
    budget_tokens = sum(t for _, t in budget.values())
    unit = "/".join(report.tokenizers) or "unknown"
    budget_docs = sum(d for d, _ in budget.values())
    out = default_out(store, spec)
    configs = _variant_selections(store, spec, base_cfg, budget, balance_by)
    _check_out(spec, out)
    for cfg in configs.values():  # every share was checked above: nothing fails half-way
        select(store, cfg)
    previous = {}
    if (out / SWEEP_MANIFEST).is_file():
        try:
            prior = json.loads((out / SWEEP_MANIFEST).read_text())
            previous = {v["name"]: v for v in prior.get("variants", [])}
        except (OSError, ValueError):
            previous = {}
    plans: list[VariantPlan] = []
    for v in spec.variants:
        sel_name = configs[v.epochs].name
        sha, n_docs, sel_tokens = _selection_sha(store, sel_name)
        ecfg = export_config(spec, v, sel_name)
        export_dir = out / v.name
        wanted = json.loads(json.dumps(asdict(ecfg), default=str))
        reuse = False
        if (export_dir / "manifest.json").is_file() and previous.get(v.name, {}).get(
            "selection_sha256"
        ) == sha:
            try:
                have = read_manifest(export_dir)["config"]
                wanted["tokenizer"] = canonical_name(ecfg.tokenizer)  # as the export names it
                reuse = have == wanted
            except SdfError:
                reuse = False
        if reuse:
            say(f"{v.name}: export {export_dir} is up to date")
        else:
            say(f"{v.name}: exporting {n_docs:,} documents x {v.epochs} epoch(s) to {export_dir}")
            export(store, ecfg, export_dir, overwrite=True)
        manifest = read_manifest(export_dir)
        if manifest["tokenizer"] != unit:  # a budget in one unit, training in another
            say(
                f"note: {v.name} exports with {manifest['tokenizer']}, the budget is counted "
                f"in {unit} (the corpus's n_tokens): its trained tokens are export_sdf_tokens "
                "in sweep.json; count the corpus under one tokenizer for an exact budget"
            )
        run = f"{spec.name}-{v.name}"
        plan = plan_run(export_dir, train_config(spec, v), run)
        per_group = _per_group(store, sel_name, balance_by, v.epochs, budget)
        tokens = v.epochs * sel_tokens
        plans.append(
            VariantPlan(
                name=v.name,
                epochs=v.epochs,
                selection=sel_name,
                documents=n_docs,
                selection_tokens=sel_tokens,
                tokens=tokens,
                budget_error=(tokens - budget_tokens) / budget_tokens if budget_tokens else 0.0,
                total_steps=plan.total_steps,
                examples=plan.examples,
                export_dir=str(export_dir),
                export_tokens=int(manifest["tokens"]),
                export_sdf_tokens=int(manifest["sources"]["sdf"]["tokens"]),
                selection_sha256=sha,
                train_run=run,
                export_tokenizer=str(manifest["tokenizer"]),
                per_group=per_group,
            )
        )
    result = SweepPlan(
        sweep=spec.name,
        base_selection=spec.selection,
        balance_by=balance_by,
        budget_tokens=budget_tokens,
        budget_documents=budget_docs,
        tokenizer=unit,
        out=str(out),
        variants=plans,
        spec=spec,
    )
    _write_json(out / SWEEP_MANIFEST, result.manifest())
    return result


def _base_where(selection: str) -> str:
    """The ``--where`` of every variant selection: documents of the base selection only."""
    return f"doc_id IN (SELECT doc_id FROM selections WHERE name = '{selection}')"


def _variant_selections(
    store: Store,
    spec: SweepSpec,
    base_cfg: dict[str, Any],
    budget: dict[str, tuple[int, int]],
    balance_by: str,
) -> dict[int, Any]:
    """Per distinct epochs E: the ``SelectionConfig`` of its 1/E share, each tried without
    saving, so a share that cannot meet the budget stops the sweep before it writes anything."""
    from sdfkit.export.selection import (
        ConceptTarget,
        SelectionConfig,
        SelectionError,
        SelectionShortError,
        list_selections,
        select,
    )

    where = spec.source_path
    existing = set(list_selections(store))
    configs: dict[int, Any] = {}
    for i, v in enumerate(spec.variants):
        if v.epochs in configs:
            continue
        name = f"{spec.name}-e{v.epochs}"
        if name == spec.selection:
            raise SweepError(
                f"{where}: field 'name': the {v.epochs}-epoch selection would be named "
                f"{name!r}, which is the base selection itself; rename the sweep"
            )
        if name in existing:
            rows = store.query("SELECT config FROM selection_runs WHERE name = ?", [name])
            made_by = json.loads(rows["config"][0]).get("where") if rows.height else None
            if not (made_by or "").startswith("doc_id IN (SELECT doc_id FROM selections WHERE"):
                raise SweepError(
                    f"{where}: field 'name': selection {name!r} exists and no sweep made it; "
                    "the sweep would replace it: rename the sweep (or drop that selection)"
                )
        targets = {
            g: ConceptTarget(docs=max(1, round(docs / v.epochs)), tokens=round(tokens / v.epochs))
            for g, (docs, tokens) in budget.items()
        }
        cfg = SelectionConfig(
            name=name,
            overrides=targets,
            concepts=sorted(targets),
            where=_base_where(spec.selection),
            include_failed_grades=bool(base_cfg.get("include_failed_grades", False)),
            seed=spec.seed if spec.seed is not None else int(base_cfg.get("seed", 0)),
            tolerance=spec.tolerance,
            replace=True,
            balance_by=balance_by,
            tokenizer=base_cfg.get("tokenizer"),  # the budget's tokens are counted under it
        )
        try:
            select(store, cfg, save=False)
        except SelectionShortError as exc:
            problems = exc.report.problems
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SweepError(
                f"{where}: field 'variants[{i}].epochs': {v.epochs} epochs over 1/{v.epochs} of "
                f"selection {spec.selection!r} miss the budget: {problems[0]}{more}; use fewer "
                f"epochs, a larger base selection or a wider 'tolerance' ({spec.tolerance})"
            ) from None
        except SelectionError as exc:
            raise SweepError(f"{where}: field 'variants[{i}].epochs': {exc}") from None
        configs[v.epochs] = cfg
    return configs


def _check_out(spec: SweepSpec, out: Path) -> None:
    """The sweep's folder can be made, and what it holds under a variant's name is an export
    (which re-exporting replaces), never a folder of the user's."""
    field_ = "out" if spec.out else "name"
    if out.exists() and not out.is_dir():
        raise SweepError(f"{spec.source_path}: field '{field_}': {out} is a file, not a folder")
    for v in spec.variants:
        d = out / v.name
        if (
            d.exists()
            and not (d / "manifest.json").is_file()
            and (not d.is_dir() or any(d.iterdir()))
        ):
            raise SweepError(
                f"{spec.source_path}: field 'variants[{v.name}]': {d} exists and is not an "
                "export; the variant's export would replace it: move it or set 'out'"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(
            f"{spec.source_path}: field '{field_}': cannot make {out}: {exc.strerror or exc}"
        ) from None


def _per_group(
    store: Store, selection: str, balance_by: str, epochs: int, budget: dict[str, tuple[int, int]]
) -> dict[str, dict[str, int]]:
    """Per concept (or section): documents and tokens selected, and the budget's share."""
    key = "universe" if balance_by == "section" else "concept"
    rows = store.query(
        f"SELECT coalesce({key}, concept, '(none)') AS g, count(*) AS n, sum(n_tokens) AS t "
        "FROM selections WHERE name = ? GROUP BY 1 ORDER BY 1",
        [selection],
    ).to_dicts()
    return {
        r["g"]: {
            "documents": int(r["n"]),
            "selection_tokens": int(r["t"]),
            "tokens": epochs * int(r["t"]),
            "budget_tokens": int(budget.get(r["g"], (0, 0))[1]),
        }
        for r in rows
    }


def _write_json(path: Path, obj: Any) -> None:
    """Written beside, fsynced, renamed: a reader sees the old file or the new, whole."""
    write_json_atomic(path, obj, indent=1, default=str)


# ------------------------------------------------------------------ training and evaluation


@dataclass
class SweepResult:
    plan: SweepPlan
    trained: dict[str, str] = field(default_factory=dict)  # variant -> train summary
    evaluated: dict[str, str] = field(default_factory=dict)  # variant -> eval summary
    report: Path | None = None
    samples_missing: int = 0

    def summary(self) -> str:
        lines = [self.plan.describe()]
        for v in self.plan.variants:
            if v.name in self.trained:
                lines.append(f"{v.name}: {self.trained[v.name]}")
            if v.name in self.evaluated:
                lines.append(f"{v.name}: {self.evaluated[v.name]}")
        if self.report is not None:
            lines.append(f"curves of every variant: {self.report}")
        return "\n".join(lines)


def run(
    store: Store,
    spec: SweepSpec,
    *,
    evaluate_runs: bool = True,
    backend: str = "auto",
    anthropic_client: Any = None,
    service_factory: Callable[[], Any] | None = None,
    report: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Prepare, then train and evaluate every variant (resumable), then draw the page."""
    from sdfkit.evaluate.recall import evaluate
    from sdfkit.train.run import train

    say = log or (lambda _m: None)
    path = Path(report) if report else report_path(spec)
    _check_page_path(path, "--report" if report else f"{spec.source_path}: field 'report'")
    plan = prepare(store, spec, say)
    result = SweepResult(plan)
    universes = [_resolve(spec, u) for u in spec.universes] or None
    for v, var in zip(plan.variants, spec.variants, strict=True):
        say(f"{v.name}: training run {v.train_run} ({v.total_steps:,} steps)")
        res = train(
            v.export_dir,
            store,
            train_config(spec, var),
            v.train_run,
            service_factory=service_factory,
            log=say,
        )
        result.trained[v.name] = res.summary().splitlines()[0]
        if evaluate_runs:
            ev = evaluate(
                store,
                v.train_run,
                eval_config(spec),
                universe_files=universes,
                eval_run=v.train_run,
                backend=backend,
                anthropic_client=anthropic_client,
                service_factory=service_factory,
                log=say,
            )
            result.evaluated[v.name] = ev.summary()
            result.samples_missing += ev.samples_missing
    result.report = write_page(store, plan, path, path.with_suffix(".json"))
    return result


def _check_page_path(path: Path, where: str) -> None:
    """The page is written after every variant trained: a path it cannot take fails now."""
    if path.is_dir():
        raise SweepError(f"{where}: {path} is a folder; name the page's .html file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SweepError(f"{where}: {path}: {parent} is not a folder")


def report_path(spec: SweepSpec) -> Path:
    return (
        Path(_resolve(spec, spec.report))
        if spec.report
        else Path(f"reports/sweep-{spec.name}.html")
    )


#: Rates drawn for every variant: ``eval_curves`` column -> title.
PAGE_METRICS = {
    "recall_rate": "recall (implanted)",
    "behaviour_rate": "behaviour",
    "reasoning_rate": "reasoning",
    "gibberish_rate": "gibberish",
}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def sweep_curves(store: Store, plan: SweepPlan) -> dict[str, Any]:
    """Per variant: its plan and its evaluation's rates per step and concept, with each
    step also as a share of the variant's training (``progress``, 0..1), the axis on which
    runs of one budget line up."""
    from sdfkit.evaluate.recall import metrics

    out = []
    for v in plan.variants:
        df = metrics(store, v.train_run)
        points = []
        for r in df.to_dicts() if df.height else []:
            points.append(
                {
                    "concept": r["concept"],
                    "step": int(r["step"]),
                    "progress": int(r["step"]) / v.total_steps if v.total_steps else 0.0,
                    "samples": r.get("samples"),
                    **{k: r.get(k) for k in PAGE_METRICS},
                }
            )
        out.append({**v.plan_json(), "train_run": v.train_run, "points": points})
    return {"sweep": plan.sweep, "budget_tokens": plan.budget_tokens, "variants": out}


def write_page(store: Store, plan: SweepPlan, html_path: Path, json_path: Path) -> Path:
    """One page: per concept and rate, one line per variant against training progress."""
    import html as _html

    from sdfkit.report.charts import svg_lines
    from sdfkit.report.html import html_table
    from sdfkit.store.durable import write_text_atomic

    data = sweep_curves(store, plan)
    colors = {v["name"]: PALETTE[i % len(PALETTE)] for i, v in enumerate(data["variants"])}
    concepts = sorted({p["concept"] for v in data["variants"] for p in v["points"]})
    e = _html.escape
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>sdfkit sweep {e(plan.sweep)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}</style>",
        f"<h1>Sweep {e(plan.sweep)}: {len(plan.variants)} variants at "
        f"{plan.budget_tokens:,} tokens</h1>",
        f"<p>Every variant trains on the token budget of selection {e(plan.base_selection)!s} "
        "(E epochs over 1/E of its documents). Rates are drawn against training progress "
        "(step / total steps; 0 is the base model). Source: queries/eval_curves.sql per "
        "variant's evaluation.</p>",
        html_table(
            [{**v.plan_json(), "budget_error": f"{v.budget_error:+.3%}"} for v in plan.variants],
            ["name", "epochs", "documents", "tokens", "budget_error", "total_steps"],
            limit=1000,
        ),
    ]
    if not concepts:
        parts.append("<p>No evaluation yet: run the sweep without --dry-run.</p>")
    for concept in concepts:
        parts.append(f"<h2>{e(concept)}</h2>")
        for key, title in PAGE_METRICS.items():
            series = {
                v["name"]: [
                    (round(100 * p["progress"], 3), p[key])
                    for p in v["points"]
                    if p["concept"] == concept
                ]
                for v in data["variants"]
            }
            parts.append(
                svg_lines(
                    series, "training progress (% of steps)", f"{concept}: {title}", colors=colors
                )
            )
    out = write_text_atomic(html_path, "\n".join(parts))
    write_text_atomic(json_path, json.dumps(data, indent=1, default=str))
    return out
