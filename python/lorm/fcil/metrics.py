"""Class-incremental metrics from the accuracy matrix ``acc[t][j]`` (j <= t)."""

from __future__ import annotations


def final_average_accuracy(acc: list[list[float]], test_sizes: list[int]) -> float:
    """Accuracy over all test samples of all tasks after the last task."""
    last = acc[-1]
    return sum(a * n for a, n in zip(last, test_sizes)) / sum(test_sizes[:len(last)])


def average_incremental_accuracy(acc: list[list[float]], test_sizes: list[int]) -> float:
    """Mean over t of the sample-weighted accuracy over tasks <= t."""
    per_step = [sum(a * n for a, n in zip(row, test_sizes)) / sum(test_sizes[:len(row)])
                for row in acc]
    return sum(per_step) / len(per_step)


def forgetting(acc: list[list[float]]) -> float:
    """Mean over j < T-1 of ``acc[j][j] - acc[T-1][j]`` (0 with a single task)."""
    last = len(acc) - 1
    if last == 0:
        return 0.0
    return sum(acc[j][j] - acc[last][j] for j in range(last)) / last


def forgetting_fed_mammoth(acc: list[list[float]]) -> float:
    """fed-mammoth's forgetting: ``acc[j][j] - acc[T-1][j]`` averaged over all T tasks,
    the last one counting 0 (so it is :func:`forgetting` times ``(T - 1) / T``)."""
    last = len(acc) - 1
    return sum(acc[j][j] - acc[last][j] for j in range(last + 1)) / (last + 1)


def just_learned_accuracy(acc: list[list[float]]) -> float:
    """Mean over t of ``acc[t][t]``, each task right after it is learned (plasticity)."""
    return sum(row[t] for t, row in enumerate(acc)) / len(acc)


def summarize(acc: list[list[float]], test_sizes: list[int]) -> dict[str, float]:
    return {"final_average_accuracy": final_average_accuracy(acc, test_sizes),
            "just_learned_accuracy": just_learned_accuracy(acc),
            "average_incremental_accuracy": average_incremental_accuracy(acc, test_sizes),
            "forgetting": forgetting(acc),
            "forgetting_fed_mammoth": forgetting_fed_mammoth(acc)}
