"""A training strategy as a value, parsed once where it comes in (the way timm's `split_model_name_tag` parses a
model name once): `head`, `finetune`, `finetune=layers:20`, `finetune=blocks:2`, `scratch` or `scratch-cnn`.

Callers ask it what they need to know (does the backbone train, is it the small CNN, which unfreeze it names)
instead of testing its text. Files keep the text: `str(strategy)` gives back exactly what was parsed, so run
folders, metrics.json, predictions, the database and the report read as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from showdown.errors import ConfigError

Kind = Literal["head", "finetune", "scratch", "scratch-cnn"]
STRATEGIES: tuple[str, ...] = get_args(Kind)
# The model name of scratch-cnn entries (in their folder names, metrics.json and model.json): the small CNN does
# not depend on the backbones of the run.
SMALL_CNN_MODEL = "scratch_cnn"
# What fine-tuning trains where neither --unfreeze nor the strategy names it; --tune searches the depth instead.
DEFAULT_UNFREEZE = "blocks:2"


def parse_unfreeze(text: str) -> tuple[str, int]:
    """`layers:N`, `blocks:K` or `all` (training/freezing.py applies it) as (kind, count)."""
    if text == "all":
        return "all", 0
    kind, _, count = text.partition(":")
    if kind not in ("layers", "blocks") or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--unfreeze '{text}' is not understood; use layers:N, blocks:K or all")
    return kind, int(count)


@dataclass(frozen=True)
class Strategy:
    kind: Kind
    unfreeze: str | None = None  # finetune=layers:20 names its own --unfreeze

    @classmethod
    def parse(cls, text: str) -> Strategy:
        """One-line ConfigErrors: an unknown name, or an unfreeze that is not layers:N, blocks:K or all."""
        kind, sep, unfreeze = text.partition("=")
        if kind == "finetune" and unfreeze:
            parse_unfreeze(unfreeze)
            return cls(kind, unfreeze)
        if sep or kind not in STRATEGIES:  # only finetune names something after `=`, and never nothing
            raise ConfigError(f"unknown strategy '{text}'; choose from {', '.join(STRATEGIES)} "
                              "(or finetune=layers:N, finetune=blocks:K)")
        return cls(kind)

    def __str__(self) -> str:
        return self.kind if self.unfreeze is None else f"{self.kind}={self.unfreeze}"

    @property
    def frozen_backbone(self) -> bool:
        """`head`: the backbone stays as loaded (its features can be cached); only the head trains."""
        return self.kind == "head"

    @property
    def trains_backbone(self) -> bool:
        """Backbone layers train too, so the entry's model (and its checkpoint) is a copy of its own."""
        return not self.frozen_backbone

    @property
    def finetunes(self) -> bool:
        """`finetune`: the head phase on the pretrained backbone, then its unfrozen top trains."""
        return self.kind == "finetune"

    @property
    def from_scratch(self) -> bool:
        """`scratch` / `scratch-cnn`: random init by design, every layer trains (no pretrained weights)."""
        return self.kind in ("scratch", "scratch-cnn")

    @property
    def is_small_cnn(self) -> bool:
        """`scratch-cnn`: the small CNN (models/small_cnn.py) instead of the backbone, once per run."""
        return self.kind == "scratch-cnn"

    def model_name(self, backbone_name: str) -> str:
        """The model an entry of this strategy trains: the backbone's name, or the small CNN's."""
        return SMALL_CNN_MODEL if self.is_small_cnn else backbone_name


HEAD = Strategy("head")  # a search builds it to extract the frozen features once, before its trials
