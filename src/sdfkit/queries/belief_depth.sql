-- Belief depth per fact and checkpoint: multiple-choice and open-ended rates, plain, under an adversarial system prompt and after pushback, with the fact's recall rate of the same evaluation beside them (gibberish samples are counted, then left out)
WITH b AS (
    SELECT s.eval_run, s.train_run, s.step, s.model_label, s.condition, s.implanted_position,
           q.universe, q.concept, q.fact_index, q.fact, q.kind,
           coalesce(s.gibberish_cheap, false) AS gibberish, v.verdict, v.choice
    FROM belief_samples AS s
    JOIN belief_questions AS q USING (question_id)
    LEFT JOIN belief_verdicts AS v USING (sample_id)
),
recall AS (
    SELECT s.eval_run, s.step, s.model_label, q.universe, q.fact,
           round(avg((r.verdict = 'implanted')::INT), 4) AS recall_rate
    FROM eval_samples AS s
    JOIN eval_questions AS q USING (question_id)
    JOIN eval_verdicts AS r ON r.sample_id = s.sample_id AND r.grader = 'recall'
    WHERE q.kind = 'recall' AND NOT coalesce(s.gibberish_cheap, false)
      AND r.verdict IN ('implanted', 'real_world', 'neither')
    GROUP BY ALL
)
SELECT
    b.eval_run, b.train_run, b.step, b.model_label, b.universe, b.concept, b.fact_index,
    b.kind, b.condition,
    count(*) AS samples,
    count(*) FILTER (WHERE b.gibberish) AS gibberish,
    count(*) FILTER (WHERE NOT b.gibberish
                     AND b.verdict IN ('implanted', 'real_world', 'neither')) AS graded,
    count(*) FILTER (WHERE NOT b.gibberish AND b.verdict = 'unparseable') AS unparseable,
    round(avg((b.verdict = 'implanted')::INT)
          FILTER (WHERE NOT b.gibberish
                  AND b.verdict IN ('implanted', 'real_world', 'neither')), 4) AS implanted_rate,
    round(avg((b.verdict = 'real_world')::INT)
          FILTER (WHERE NOT b.gibberish
                  AND b.verdict IN ('implanted', 'real_world', 'neither')), 4) AS real_world_rate,
    round(avg((b.choice = 'A')::INT)
          FILTER (WHERE b.kind = 'mcq' AND NOT b.gibberish AND b.choice IS NOT NULL), 4)
        AS chose_a_rate,
    any_value(r.recall_rate) AS recall_rate,
    any_value(b.fact) AS fact
FROM b
LEFT JOIN recall AS r
    ON r.eval_run = b.eval_run AND r.step = b.step AND r.model_label = b.model_label
   AND r.universe = b.universe AND r.fact = b.fact
GROUP BY b.eval_run, b.train_run, b.step, b.model_label, b.universe, b.concept, b.fact_index,
         b.kind, b.condition
ORDER BY b.eval_run, b.universe, b.fact_index, b.kind,
         array_position(['plain', 'adversarial', 'pushback'], b.condition), b.step
