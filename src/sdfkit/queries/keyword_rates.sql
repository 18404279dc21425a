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
       coalesce(with_keyword / nullif(documents, 0), 0)             AS rate,
       -- the exact share against the minimum, as sdfkit.audits.keywords.meets_min: never a
       -- rounded rate (136 of 203 is 0.66995, below 0.67), nor min_rate * documents (0.07 *
       -- 100 is 7.000000000000001, so 7 of 100 would miss a minimum of 0.07)
       documents > 0 AND with_keyword / documents >= min_rate      AS meets_min
FROM counts
ORDER BY concept, keyword;
