-- Documents per 250-token length bucket and concept (for a histogram).
SELECT concept,
       (n_tokens // 250) * 250 AS bucket_start,
       count(*)                AS documents
FROM documents
GROUP BY concept, bucket_start
ORDER BY concept, bucket_start;
