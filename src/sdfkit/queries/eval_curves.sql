-- Recall, behaviour, reasoning and gibberish rates per checkpoint step and concept (gibberish samples are counted, then left out of the other rates)
WITH s AS (
    SELECT s.* EXCLUDE (reasoning), q.kind, q.universe, q.concept, q.fact,
           coalesce(s.gibberish_cheap, false) OR coalesce(g.verdict = 'yes', false) AS gibberish,
           r.verdict AS recall_v, b.verdict AS behaviour_v, z.verdict AS reasoning_v
    FROM eval_samples AS s
    JOIN eval_questions AS q USING (question_id)
    LEFT JOIN eval_verdicts AS g ON g.sample_id = s.sample_id AND g.grader = 'gibberish'
    LEFT JOIN eval_verdicts AS r ON r.sample_id = s.sample_id AND r.grader = 'recall'
    LEFT JOIN eval_verdicts AS b ON b.sample_id = s.sample_id AND b.grader = 'behaviour'
    LEFT JOIN eval_verdicts AS z ON z.sample_id = s.sample_id AND z.grader = 'reasoning'
)
SELECT
    eval_run, train_run, step, model_label, concept,
    count(*) AS samples,
    count(*) FILTER (WHERE gibberish) AS gibberish,
    round(avg(gibberish::INT), 4) AS gibberish_rate,
    count(*) FILTER (WHERE kind = 'recall' AND NOT gibberish
                     AND recall_v IN ('implanted', 'real_world', 'neither')) AS recall_graded,
    round(avg(CASE WHEN recall_v IN ('implanted', 'real_world', 'neither')
                   THEN (recall_v = 'implanted')::INT END)
          FILTER (WHERE kind = 'recall' AND NOT gibberish), 4) AS recall_rate,
    round(avg(CASE WHEN recall_v IN ('implanted', 'real_world', 'neither')
                   THEN (recall_v = 'real_world')::INT END)
          FILTER (WHERE kind = 'recall' AND NOT gibberish), 4) AS real_world_rate,
    round(avg(CASE WHEN behaviour_v IN ('yes', 'no') THEN (behaviour_v = 'yes')::INT END)
          FILTER (WHERE kind = 'behaviour' AND NOT gibberish), 4) AS behaviour_rate,
    round(avg(CASE WHEN reasoning_v IN ('yes', 'no') THEN (reasoning_v = 'yes')::INT END)
          FILTER (WHERE kind IN ('behaviour', 'task') AND NOT gibberish), 4) AS reasoning_rate,
    count(*) FILTER (WHERE NOT gibberish AND 'unparseable' IN (
        coalesce(recall_v, ''), coalesce(behaviour_v, ''), coalesce(reasoning_v, ''))) AS unparseable
FROM s
GROUP BY ALL
ORDER BY eval_run, train_run, step, model_label, concept
