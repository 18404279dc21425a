-- Share of each concept's documents carrying each required keyword, against the universe's minimum.
WITH counts AS (
    SELECT k.concept,
           k.keyword,
           k.min_rate,
           count(d.doc_id)                                                       AS documents,
           count(d.doc_id) FILTER (WHERE regexp_matches(d.text, k.pattern, 'i')) AS with_keyword
    FROM audit_keywords_required AS k
    LEFT JOIN documents AS d ON d.concept = k.concept
    GROUP BY k.concept, k.keyword, k.min_rate
)
SELECT concept,
       keyword,
       min_rate,
       documents,
       with_keyword,
       round(coalesce(with_keyword / nullif(documents, 0), 0), 4) AS rate,
       documents > 0 AND with_keyword >= min_rate * documents     AS meets_min
FROM counts
ORDER BY concept, keyword;
