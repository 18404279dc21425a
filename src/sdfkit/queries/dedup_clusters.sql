-- Documents in near-duplicate clusters (after `sdf audit dedup`): which is kept, which excluded
SELECT c.cluster,
       c.size,
       c.kept,
       c.doc_id,
       c.kept_doc_id,
       d.concept,
       d.doc_type,
       d.chars,
       d.created_at,
       left(d.text, 120) AS opening
FROM audit_dedup_clusters AS c
JOIN documents AS d USING (doc_id)
ORDER BY c.size DESC, c.cluster, c.kept DESC, c.doc_id
