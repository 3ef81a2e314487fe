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
        import random
        import warnings

        from showdown.startup import without_optional_imports

        # the warning filters modules set as they load (showdown's own, sympy's) are not left in the user's
        # process: a call sets showdown's for its span (experiment/kept_state.py); nor a draw from Python's random
        # generator (rich takes one as it loads), which the user may have seeded just before
        drawn = random.getstate()
        with without_optional_imports(), warnings.catch_warnings():
            # tqdm.auto, which huggingface_hub imports, asks for ipywidgets in a notebook without them (the bars
            # showdown draws fall back to text there: bars.py)
            warnings.filterwarnings("ignore", message="IProgress not found")
            from showdown.experiment import runner
        random.setstate(drawn)
        return getattr(runner, name)
    raise AttributeError(f"module 'showdown' has no attribute '{name}'")
