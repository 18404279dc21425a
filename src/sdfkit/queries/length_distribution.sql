-- Token-length distribution per concept: quantiles show short stubs and runaway documents.
SELECT concept,
       count(*)                                   AS documents,
       min(n_tokens)                              AS min_tokens,
       quantile_cont(n_tokens, 0.10)::BIGINT      AS p10,
       quantile_cont(n_tokens, 0.50)::BIGINT      AS median,
       quantile_cont(n_tokens, 0.90)::BIGINT      AS p90,
       max(n_tokens)                              AS max_tokens,
       round(avg(chars))::BIGINT                  AS mean_chars
FROM documents
GROUP BY concept
ORDER BY concept;
