-- Recall per section (universe) and per parent concept, per evaluation and checkpoint: implanted / real-world rates of graded, non-gibberish recall answers
WITH s AS (
    SELECT s.eval_run, s.train_run, s.step, s.model_label, s.question_id, q.universe, q.concept,
           coalesce(s.gibberish_cheap, false) OR coalesce(g.verdict = 'yes', false) AS gibberish,
           r.verdict AS recall_v
    FROM eval_samples AS s
    JOIN eval_questions AS q USING (question_id)
    LEFT JOIN eval_verdicts AS g ON g.sample_id = s.sample_id AND g.grader = 'gibberish'
    LEFT JOIN eval_verdicts AS r ON r.sample_id = s.sample_id AND r.grader = 'recall'
    WHERE q.kind = 'recall'
)
SELECT
    eval_run, train_run, step, model_label, concept,
    CASE WHEN grouping(universe) = 1 THEN 'parent' ELSE 'section' END AS level,
    CASE WHEN grouping(universe) = 1 THEN NULL ELSE universe END AS section,
    count(DISTINCT universe) AS sections,
    count(DISTINCT question_id) AS questions,
    count(*) AS samples,
    count(*) FILTER (WHERE gibberish) AS gibberish,
    count(*) FILTER (WHERE NOT gibberish
                     AND recall_v IN ('implanted', 'real_world', 'neither')) AS recall_graded,
    round(avg(CASE WHEN recall_v IN ('implanted', 'real_world', 'neither')
                   THEN (recall_v = 'implanted')::INT END) FILTER (WHERE NOT gibberish), 4) AS recall_rate,
    round(avg(CASE WHEN recall_v IN ('implanted', 'real_world', 'neither')
                   THEN (recall_v = 'real_world')::INT END) FILTER (WHERE NOT gibberish), 4) AS real_world_rate
FROM s
GROUP BY GROUPING SETS (
    (eval_run, train_run, step, model_label, concept),
    (eval_run, train_run, step, model_label, concept, universe)
)
ORDER BY eval_run, train_run, step, model_label, concept, level, section
