"""LoRM on Flower (``pip install lorm[flower]``): a ``Strategy`` and a ``ClientApp``
over the same client code, Method objects, Aggregator, CrossTaskMerger and checkpoints
as ``lorm run``. See docs/flower.md.

- :class:`LoRMStrategy` (:mod:`lorm.flower.strategy`), :func:`make_server_app` and the
  ``app`` of :mod:`lorm.flower.server_app` (for ``flwr run``);
- :func:`make_client_app` and the ``app`` of :mod:`lorm.flower.node`;
- :mod:`lorm.flower.records`: ClientUpdate <-> Flower records, no pickle.
"""

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("lorm.flower needs Flower: pip install 'lorm[flower]' "
                      "(flwr[simulation]==1.42.0)") from exc

from .node import make_client_app
from .records import content_to_update, update_to_content
from .server_app import make_server_app
from .strategy import LoRMStrategy, RoundFailed
from .transport import FlowerTransport

__all__ = ["FlowerTransport", "LoRMStrategy", "RoundFailed", "content_to_update", "make_client_app",
           "make_server_app", "update_to_content"]
