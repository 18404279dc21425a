-- Achieved length against the length asked (target_words of the generation request) per concept × doc type.
WITH d AS (
    SELECT coalesce(concept, '(none)') AS concept,
           coalesce(doc_type, '(none)') AS doc_type,
           try_cast(meta->>'target_words' AS INTEGER) AS target_words,
           len(string_split_regex(trim(text), '\s+')) AS words,
           n_tokens
    FROM documents
)
SELECT concept,
       doc_type,
       count(*)                                               AS documents,
       count(target_words)                                    AS with_target,
       min(target_words)                                      AS target_min,
       max(target_words)                                      AS target_max,
       quantile_cont(target_words, 0.5)::BIGINT               AS median_target_words,
       quantile_cont(words, 0.5)::BIGINT                      AS median_words,
       round(median(words / nullif(target_words, 0)), 3)      AS median_achieved_ratio,
       quantile_cont(n_tokens, 0.5)::BIGINT                   AS median_tokens
FROM d
GROUP BY ALL
ORDER BY concept, doc_type;
