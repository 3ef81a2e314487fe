"""tl-showdown: which pretrained backbone, adapted how, classifies my images best, and at what cost?"""
from showdown.config.run_config import RunConfig
from showdown.errors import ShowdownError
from showdown.experiment.runner import Results, run

__all__ = ["Results", "RunConfig", "ShowdownError", "run"]
__version__ = "0.1.0"
