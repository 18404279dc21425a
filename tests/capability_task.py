"""A small local inspect task whose scores are known: sums of two numbers, scored by match.
(Loaded by tests/test_capabilities.py directly and through ``file.py@task``.)"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import match
from inspect_ai.solver import generate

#: (a, b) of each sample; the answer is a + b.
PAIRS = [(2, 3), (4, 4), (7, 5), (10, 6), (1, 8), (9, 9), (3, 11), (6, 6), (12, 1), (5, 13)]


@task
def sums() -> Task:
    samples = [
        Sample(input=f"What is {a}+{b}? Answer with the number only.", target=str(a + b), id=i)
        for i, (a, b) in enumerate(PAIRS)
    ]
    return Task(dataset=MemoryDataset(samples, name="sums"), solver=generate(), scorer=match())
