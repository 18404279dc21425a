-- Capability regression: each checkpoint's benchmark scores against the base model's (same run, task, metric and sample limit); change = checkpoint - base, with the standard error of the difference
WITH s AS (
    SELECT * FROM capability_scores
),
base AS (
    SELECT run, task, scorer, metric, sample_limit, value AS base_value, stderr AS base_stderr,
           samples AS base_samples
    FROM s WHERE model_label = 'base'
)
SELECT
    s.run, s.task, s.scorer, s.metric, s.step, s.model_label, s.sample_limit,
    s.samples, round(s.value, 4) AS value, round(s.stderr, 4) AS stderr,
    round(b.base_value, 4) AS base_value, round(b.base_stderr, 4) AS base_stderr,
    round(s.value - b.base_value, 4) AS change,
    round(sqrt(s.stderr * s.stderr + b.base_stderr * b.base_stderr), 4) AS change_stderr
FROM s
LEFT JOIN base AS b
    ON b.run = s.run AND b.task = s.task AND b.scorer = s.scorer AND b.metric = s.metric
   AND b.sample_limit = s.sample_limit
ORDER BY s.run, s.task, s.scorer, s.metric, s.sample_limit, s.step, s.model_label != 'base'
