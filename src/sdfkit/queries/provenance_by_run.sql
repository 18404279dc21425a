-- Where documents came from: per run, source and model, with prompt versions and time span.
SELECT coalesce(run, '(none)')          AS run,
       source,
       coalesce(model, '(unknown)')      AS model,
       count(*)                          AS documents,
       sum(n_tokens)::BIGINT             AS tokens,
       count(DISTINCT prompt_hash)       AS prompt_versions,
       count(DISTINCT batch_id)          AS batches,
       min(created_at)                   AS first_created,
       max(created_at)                   AS last_created
FROM documents
GROUP BY ALL
ORDER BY first_created, run;
