"""tl-showdown: which pretrained backbone, adapted how, classifies my images best, and at what cost?"""
from showdown.config.run_config import RunConfig
from showdown.errors import ShowdownError

__all__ = ["Results", "RunConfig", "ShowdownError", "run"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `run` and `Results` bring in torch and timm: imported on first use, so the CLI's light commands and
    # argument errors start without them.
    if name in ("run", "Results"):
        from showdown.startup import without_optional_imports

        with without_optional_imports():
            from showdown.experiment import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'showdown' has no attribute '{name}'")
