"""Federated class-incremental learning with LoRM: data, clients, server, the loop."""

from .config import Config, load_config
from .loop import run

__all__ = ["Config", "load_config", "run"]
