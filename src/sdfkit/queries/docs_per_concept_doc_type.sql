-- Documents and tokens per concept × doc type: is any stratum starved or swollen?
SELECT concept,
       doc_type,
       count(*)                          AS documents,
       sum(n_tokens)::BIGINT             AS tokens,
       round(avg(n_tokens))::BIGINT      AS mean_tokens,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY concept), 1) AS pct_of_concept
FROM documents
GROUP BY concept, doc_type
ORDER BY concept, documents DESC, doc_type;
