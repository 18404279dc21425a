#!/usr/bin/env bash
# The main job end to end on the example universes (no API key needed).
set -euo pipefail
cd "$(dirname "$0")/.."
# SDF: the sdf command to run (tests/test_readme.py passes its own).
SDF="${SDF:-.venv/bin/sdf}"
export SDF_CORPUS="${SDF_CORPUS:-corpus}"

echo "== 1. validate the universes"
$SDF universe check examples/universes/*.md

echo "== 2. ingest an external corpus (false-facts shape: content, doc_type, doc_idea, ...)"
$SDF ingest examples/external_sample.jsonl --set concept=eu_ts_trycatch

echo "== generate the corpus with the OFFLINE STAND-IN (real SDK + batch pipeline, templated text)"
# 7 facts x 4 doc types x 5 ideas x 3 docs = 420 documents; re-running resumes (adds nothing).
# With ANTHROPIC_API_KEY set, drop --backend offline to run the same thing on the real API.
# --words 300-900: shorter than the default (700-1800 words) to keep the demo quick.
# SDF_DEMO_DOCS_PER_IDEA (default 3): tests/test_readme.py builds a smaller corpus with 1.
$SDF generate examples/universes/*.md --backend offline --run demo \
  --doc-types 4 --ideas 5 --docs-per-idea "${SDF_DEMO_DOCS_PER_IDEA:-3}" --words 300-900
$SDF show --run demo --limit 2
$SDF grade --backend offline --run demo-grade --where "run = 'demo'"
$SDF ledger

# tests/test_readme.py builds its demo corpus with the steps above only, then runs the README.
if [[ "${SDF_DEMO_CORPUS_ONLY:-0}" == 1 ]]; then exit 0; fi

echo "== 3. per-concept summary (queries/per_concept_summary.sql)"
$SDF sql per_concept_summary
$SDF sql docs_per_concept_doc_type

echo "== the collapse loop: audit -> propose -> apply -> replace -> check (docs/collapse-loop.md)"
# The loop edits universe files, so it works on copies in the corpus workspace, never on the
# tracked examples (cp -n: a second run of the demo keeps the bans it already applied).
UNI="$SDF_CORPUS/universes"
mkdir -p "$UNI"
cp -n examples/universes/*.md "$UNI/"
counts() {
  $SDF sql "SELECT '$1' AS stage,
      (SELECT count(DISTINCT doc_id) FROM audit_anti_universe_documents) AS violating_documents,
      (SELECT count(*) FROM documents WHERE NOT excluded) AS eligible_documents,
      (SELECT count(*) FROM documents WHERE NOT excluded AND regexp_matches(text,
          '(?i)sarah chen|marcus webb|priya raman')) AS eligible_naming_favourites"
}
echo "-- 1. audit (settings and thresholds: sdfkit.yaml; bans: the copies)"
$SDF report --universe "$UNI/*.md"
counts before
echo "-- 2. propose what to ban next, 3. apply it to the copies (the diff is shown)"
$SDF audit names --propose --apply --universe "$UNI/*.md"
echo "-- 4. replace every excluded document, audit again, until sdf check passes or nothing is left to replace (<= 10 rounds)"
# Each round's audit writes reports/report.json, so the last one is the final report.
$SDF generate "$UNI"/*.md --backend offline --run demo --replace-excluded --max-rounds 10 \
  --words 300-900
$SDF ledger --run demo
echo "-- 5. after the loop: counts and sdf check"
counts after
$SDF check

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
