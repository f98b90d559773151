"""The ``ServerApp``: :class:`~lorm.flower.strategy.LoRMStrategy` over the grid.

For ``flwr run`` the app reads its run config (``[tool.flwr.app.config]`` of the app's
pyproject.toml, or ``flwr run --run-config``):

- ``config``: a YAML config file (as ``lorm run --config``; empty: the defaults);
- ``set``: ``key=value`` overrides separated by ``;`` (as ``--set``);
- ``output``: the run directory; ``resume``: continue it; ``overwrite``: replace it;
- ``min-replies`` (0: every addressed node), ``round-timeout`` (seconds), ``retries``
  (re-sends of an unanswered message, default 1).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..fcil.config import Config, load_config
from .strategy import LoRMStrategy


def config_from_run_config(run_config: dict) -> tuple[Config, dict]:
    """The lorm Config and the strategy's keyword arguments of a Flower run config."""
    overrides = [s.strip() for s in str(run_config.get("set", "")).split(";") if s.strip()]
    config = load_config(run_config.get("config") or None, overrides)
    kwargs = dict(run_dir=Path(str(run_config.get("output", "runs/flower"))),
                  resume=bool(run_config.get("resume", False)),
                  overwrite=bool(run_config.get("overwrite", False)),
                  min_replies=int(run_config.get("min-replies", 0)) or None,
                  round_timeout=float(run_config.get("round-timeout", 600.0)),
                  retries=int(run_config.get("retries", 1)))
    return config, kwargs


def make_server_app(config: Config | None = None, **strategy_kwargs) -> ServerApp:
    """A ServerApp running :class:`LoRMStrategy`: with ``config`` and the strategy's
    keyword arguments as given (simulation from Python), or from the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is None:
            run_config, kwargs = config_from_run_config(dict(context.run_config))
        else:
            run_config, kwargs = config, strategy_kwargs
        LoRMStrategy(run_config, **kwargs).start(grid)

    return app


app = make_server_app()
