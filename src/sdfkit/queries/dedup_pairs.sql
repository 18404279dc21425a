-- Near-duplicate pairs (after `sdf audit dedup`) with verified and estimated Jaccard and both openings
SELECT p.jaccard,
       p.estimated_jaccard,
       p.doc_a,
       p.doc_b,
       a.concept,
       left(a.text, 80) AS opening_a,
       left(b.text, 80) AS opening_b
FROM audit_dedup_pairs AS p
JOIN documents AS a ON a.doc_id = p.doc_a
JOIN documents AS b ON b.doc_id = p.doc_b
ORDER BY p.jaccard DESC
