-- Documents carrying each flagged n-gram (after `sdf audit ngrams`), with where it sits in the text
SELECT f.n,
       f.ngram,
       f.share,
       d.doc_id,
       d.concept,
       d.doc_type,
       regexp_extract(lower(d.text), '.{0,60}' || replace(f.ngram, ' ', '[^[:alnum:]]+') || '.{0,60}') AS context
FROM (SELECT DISTINCT n, ngram, max(share) AS share FROM audit_ngrams_flagged GROUP BY ALL) AS f
JOIN documents AS d
  ON regexp_matches(lower(d.text), '(^|[^[:alnum:]])' || replace(f.ngram, ' ', '[^[:alnum:]]+') || '($|[^[:alnum:]])')
ORDER BY f.share DESC, f.n DESC, f.ngram, d.doc_id
