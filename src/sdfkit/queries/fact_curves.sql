-- Recall and belief depth per fact against training step, beside each fact's share of the tokens in the export that trained the run (gibberish samples left out; belief columns empty without sdf eval --belief)
WITH recall AS (
    SELECT s.eval_run, s.train_run, s.step, s.model_label, q.universe, q.concept,
           q.fact_index, q.fact,
           count(*) FILTER (WHERE r.verdict IN ('implanted', 'real_world', 'neither'))
               AS recall_graded,
           round(avg((r.verdict = 'implanted')::INT)
                 FILTER (WHERE r.verdict IN ('implanted', 'real_world', 'neither')), 4)
               AS recall_rate
    FROM eval_samples AS s
    JOIN eval_questions AS q USING (question_id)
    LEFT JOIN eval_verdicts AS r ON r.sample_id = s.sample_id AND r.grader = 'recall'
    WHERE q.kind = 'recall' AND NOT coalesce(s.gibberish_cheap, false)
    GROUP BY ALL
),
belief AS (
    SELECT s.eval_run, s.step, s.model_label, q.universe, q.fact,
           round(avg((v.verdict = 'implanted')::INT) FILTER (
               WHERE s.condition = 'plain' AND q.kind = 'mcq' AND v.verdict <> 'unparseable'), 4)
               AS mcq_implanted,
           round(avg((v.verdict = 'implanted')::INT) FILTER (
               WHERE s.condition = 'plain' AND q.kind = 'open' AND v.verdict <> 'unparseable'), 4)
               AS open_implanted,
           round(avg((v.verdict = 'implanted')::INT) FILTER (
               WHERE s.condition = 'adversarial' AND v.verdict <> 'unparseable'), 4)
               AS adversarial_implanted,
           round(avg((v.verdict = 'implanted')::INT) FILTER (
               WHERE s.condition = 'pushback' AND v.verdict <> 'unparseable'), 4)
               AS pushback_implanted
    FROM belief_samples AS s
    JOIN belief_questions AS q USING (question_id)
    JOIN belief_verdicts AS v USING (sample_id)
    WHERE NOT coalesce(s.gibberish_cheap, false)
    GROUP BY ALL
)
SELECT r.eval_run, r.train_run, r.step, r.model_label, r.universe, r.concept, r.fact_index,
       r.recall_graded, r.recall_rate,
       b.mcq_implanted, b.open_implanted, b.adversarial_implanted, b.pushback_implanted,
       t.documents, t.tokens, t.token_share, t.loss_token_share, r.fact
FROM recall AS r
LEFT JOIN belief AS b
    ON b.eval_run = r.eval_run AND b.step = r.step AND b.model_label = r.model_label
   AND b.universe = r.universe AND b.fact = r.fact
LEFT JOIN export_fact_tokens AS t
    ON t.run = r.train_run AND t.universe = r.universe AND t.fact = r.fact
   AND t.source = 'sdf'
ORDER BY r.eval_run, r.universe, r.fact_index, r.step, r.model_label <> 'base'
