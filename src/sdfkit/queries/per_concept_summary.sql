-- One line per concept: documents, tokens, doc types, and how many documents are excluded.
SELECT concept,
       count(*)                                  AS documents,
       sum(n_tokens)::BIGINT                     AS tokens,
       round(avg(n_tokens))::BIGINT              AS mean_tokens,
       count(DISTINCT doc_type)                  AS doc_types,
       count(DISTINCT universe)                  AS universes,
       count(*) FILTER (WHERE excluded)          AS excluded
FROM documents
GROUP BY concept
ORDER BY concept;
