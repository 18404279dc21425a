-- Shape of each concept × doc type: documents, tokens, length quantiles, grader verdicts, exclusions.
SELECT coalesce(concept, '(none)')                          AS concept,
       coalesce(doc_type, '(none)')                         AS doc_type,
       count(*)                                             AS documents,
       sum(n_tokens)::BIGINT                                AS tokens,
       round(avg(n_tokens))::BIGINT                         AS mean_tokens,
       min(n_tokens)                                        AS min_tokens,
       quantile_cont(n_tokens, 0.10)::BIGINT                AS p10_tokens,
       quantile_cont(n_tokens, 0.50)::BIGINT                AS median_tokens,
       quantile_cont(n_tokens, 0.90)::BIGINT                AS p90_tokens,
       max(n_tokens)                                        AS max_tokens,
       round(avg(chars))::BIGINT                            AS mean_chars,
       count(grade_passed)                                  AS graded,
       count(*) FILTER (WHERE grade_passed)                 AS grade_passed,
       count(*) FILTER (WHERE NOT grade_passed)             AS grade_failed,
       round(count(*) FILTER (WHERE grade_passed) / nullif(count(grade_passed), 0), 4) AS pass_rate,
       count(*) FILTER (WHERE excluded)                     AS excluded
FROM documents
GROUP BY ALL
ORDER BY concept, documents DESC, doc_type;
