-- Does each document carry each required keyword of its concept? (rows of audit_keywords_required)
SELECT d.doc_id,
       d.concept,
       coalesce(d.doc_type, '(none)')                      AS doc_type,
       k.keyword,
       regexp_matches(d.text, k.pattern, 'i')               AS present
FROM documents AS d
JOIN audit_keywords_required AS k ON d.concept = k.concept
ORDER BY d.concept, k.keyword, d.doc_id;
