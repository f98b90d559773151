"""lorm: closed-form merging of LoRA modules for federated class-incremental learning.

The compiled statistics and solve kernels live in :mod:`lorm_ext`; this package will
hold the LoRA layers, the merges and the federated driver built on them.
"""

__version__ = "0.1.0"
