-- Shape of each concept: documents, tokens, length quantiles, doc types, grader verdicts, exclusions.
SELECT coalesce(concept, '(none)')                          AS concept,
       count(*)                                             AS documents,
       sum(n_tokens)::BIGINT                                AS tokens,
       round(avg(n_tokens))::BIGINT                         AS mean_tokens,
       quantile_cont(n_tokens, 0.10)::BIGINT                AS p10_tokens,
       quantile_cont(n_tokens, 0.50)::BIGINT                AS median_tokens,
       quantile_cont(n_tokens, 0.90)::BIGINT                AS p90_tokens,
       count(DISTINCT doc_type)                             AS doc_types,
       count(grade_passed)                                  AS graded,
       round(count(*) FILTER (WHERE grade_passed) / nullif(count(grade_passed), 0), 4) AS pass_rate,
       count(*) FILTER (WHERE excluded)                     AS excluded
FROM documents
GROUP BY ALL
ORDER BY concept;
