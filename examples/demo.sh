#!/usr/bin/env bash
# The main job end to end on the example universes (no API key needed).
set -euo pipefail
cd "$(dirname "$0")/.."
SDF=.venv/bin/sdf
export SDF_CORPUS="${SDF_CORPUS:-corpus}"

echo "== 1. validate the universes"
$SDF universe check examples/universes/*.md

echo "== 2. ingest an external corpus (false-facts shape: content, doc_type, doc_idea, ...)"
$SDF ingest examples/external_sample.jsonl --set concept=eu_ts_trycatch

echo "== generate the corpus with the OFFLINE STAND-IN (real SDK + batch pipeline, templated text)"
# 7 facts x 4 doc types x 5 ideas x 3 docs = 420 documents; re-running resumes (adds nothing).
# With ANTHROPIC_API_KEY set, drop --backend offline to run the same thing on the real API.
$SDF generate examples/universes/*.md --backend offline --run demo \
  --doc-types 4 --ideas 5 --docs-per-idea 3
$SDF show --run demo --limit 2
$SDF grade --backend offline --run demo-grade --where "run = 'demo'"
$SDF ledger

echo "== 3. per-concept summary (queries/per_concept_summary.sql)"
$SDF sql per_concept_summary
$SDF sql docs_per_concept_doc_type

echo "== audit report: collapse, near-duplicates, diversity, keywords (reports/report.html)"
# Settings and thresholds come from sdfkit.yaml (universes: examples/universes/*.md).
$SDF report
echo "== sdf check: thresholds of sdfkit.yaml; exits 1 naming each breach (a pipeline stops here)"
$SDF check || echo "check found breaches (expected on the offline stand-in corpus; the demo goes on)"

echo "== balanced selection: equal documents AND tokens per concept, doc-type mix kept"
# Generate several times more than you keep, then select. Targets that fit the demo corpus:
# 60 % of the smallest concept's eligible documents, at that concept's mean length.
read -r SEL_DOCS SEL_TOKENS < <($SDF sql "
  WITH c AS (SELECT concept, count(*) AS n, avg(n_tokens) AS mean FROM documents
             WHERE NOT excluded AND coalesce(grade_passed, true) GROUP BY concept)
  SELECT greatest(1, floor(min(n) * 0.6))::BIGINT AS docs,
         greatest(1, floor(greatest(1, floor(min(n) * 0.6)) * min(mean)))::BIGINT AS tokens
  FROM c" --format csv | tail -n 1 | tr ',' ' ')
$SDF select --name demo --docs "$SEL_DOCS" --tokens "$SEL_TOKENS" --seed 0 --replace --allow-short

echo "== Tinker shards for gpt-oss (3 epochs, EOS, no DOCTAG, no webtext), then verify them"
$SDF export --selection demo --out "$SDF_CORPUS/exports/demo" --epochs 3 --overwrite
$SDF export verify "$SDF_CORPUS/exports/demo"

echo "== training plan on Tinker for the demo export (dry run: contacts nothing)"
# Set TINKER_API_KEY and drop --dry-run to train; rerun the same command to resume.
$SDF train "$SDF_CORPUS/exports/demo" --dry-run
