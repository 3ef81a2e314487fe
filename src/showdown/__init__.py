"""tl-showdown: which pretrained backbone, adapted how, classifies my images best, and at what cost?"""
from showdown.errors import ShowdownError

__all__ = ["Results", "RunConfig", "ShowdownError", "run"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: `run` and `Results` bring in torch and timm, so the CLI's light commands and argument
    # errors start without them; RunConfig brings in YAML and the options, which a command the daemon runs
    # (daemon.py) does not need in its own process.
    if name == "RunConfig":
        from showdown.config.run_config import RunConfig

        return RunConfig
    if name in ("run", "Results"):
        from showdown.startup import without_optional_imports

        with without_optional_imports():
            from showdown.experiment import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'showdown' has no attribute '{name}'")
