-- Documents mentioning the five most mentioned person names (after `sdf audit names`), most mentions first
WITH top AS (SELECT name FROM audit_names_top ORDER BY mentions DESC LIMIT 5)
SELECT n.name,
       n.mentions,
       d.doc_id,
       d.concept,
       d.doc_type,
       d.seed_names,
       left(d.text, 100) AS opening
FROM audit_names_documents AS n
JOIN top USING (name)
JOIN documents AS d USING (doc_id)
ORDER BY n.name, n.mentions DESC, d.doc_id
