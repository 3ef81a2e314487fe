"""tl-showdown: which pretrained backbone, adapted how, classifies my images best, and at what cost?"""
from .config import RunConfig
from .errors import ShowdownError
from .experiment import Results, run

__all__ = ["Results", "RunConfig", "ShowdownError", "run"]
__version__ = "0.1.0"
