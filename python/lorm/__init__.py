"""lorm: closed-form merging of LoRA modules for federated class-incremental learning.

- :mod:`lorm.merge`: the closed forms on lists (A-step, B-step, RegMean, cross-task,
  FedAvg baselines) and the client-side statistics builders.
- :mod:`lorm.messages`: :class:`ClientUpdate`, what a client sends, and its bytes.
- :mod:`lorm.aggregate`: :class:`Aggregator`, the streaming server-side sum and solve,
  and :class:`CrossTaskMerger`.

The compiled statistics and solve kernels live in :mod:`lorm_ext`.
"""

from .aggregate import Aggregator, MergeResult, UpdateRejected
from .cross_task import CrossTaskMerger
from .messages import ClientUpdate, SolveStats

__version__ = "0.1.0"

__all__ = ["Aggregator", "ClientUpdate", "CrossTaskMerger", "MergeResult", "SolveStats",
           "UpdateRejected", "__version__"]
