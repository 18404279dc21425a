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

echo "== 3. per-concept summary (queries/per_concept_summary.sql)"
$SDF sql per_concept_summary
$SDF sql docs_per_concept_doc_type
