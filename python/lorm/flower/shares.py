"""How an evaluation is shared among nodes: whole test batches, so that each share's
counts are the ones ``lorm run`` gets for those batches, bit for bit."""

from __future__ import annotations

from ..fcil.client import EVAL_BATCH


def shard_of_batches(indices: list[int], shard: int, shards: int) -> list[int]:
    """Share ``shard`` of ``shards`` of ``indices`` as whole evaluation batches (every
    ``shards``-th batch of :data:`~lorm.fcil.client.EVAL_BATCH`)."""
    batches = [indices[k:k + EVAL_BATCH] for k in range(0, len(indices), EVAL_BATCH)]
    return [i for batch in batches[shard::shards] for i in batch]
