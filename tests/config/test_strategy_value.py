"""Strategy: parsed once, its text given back exactly (files keep it), one-line errors as the flags give them."""
import pytest

from showdown import RunConfig
from showdown.config.strategy import SMALL_CNN_MODEL, Strategy
from showdown.errors import ConfigError

TEXTS = ["head", "finetune", "finetune=layers:20", "finetune=blocks:2", "finetune=all", "scratch", "scratch-cnn"]


@pytest.mark.parametrize("text", TEXTS)
def test_str_gives_back_the_text_parsed(text):
    strategy = Strategy.parse(text)
    assert str(strategy) == f"{strategy}" == text
    assert Strategy.parse(str(strategy)) == strategy


def test_what_each_strategy_answers():
    head, finetune, named = Strategy.parse("head"), Strategy.parse("finetune"), Strategy.parse("finetune=layers:20")
    scratch, cnn = Strategy.parse("scratch"), Strategy.parse("scratch-cnn")
    assert [s.frozen_backbone for s in (head, finetune, scratch, cnn)] == [True, False, False, False]
    assert [s.trains_backbone for s in (head, finetune, scratch, cnn)] == [False, True, True, True]
    assert [s.from_scratch for s in (head, finetune, scratch, cnn)] == [False, False, True, True]
    assert [s.finetunes for s in (head, named, scratch)] == [False, True, False]
    assert (named.kind, named.unfreeze, finetune.unfreeze) == ("finetune", "layers:20", None)
    assert cnn.is_small_cnn and not scratch.is_small_cnn
    assert (cnn.model_name("efficientnet_lite0"), scratch.model_name("efficientnet_lite0")) == \
        (SMALL_CNN_MODEL, "efficientnet_lite0")


@pytest.mark.parametrize("text, message", [
    ("magic", "unknown strategy 'magic'; choose from head, finetune, scratch, scratch-cnn "
              "(or finetune=layers:N, finetune=blocks:K)"),
    ("head=layers:2", "unknown strategy 'head=layers:2'"),  # only finetune names an unfreeze
    ("finetune=", "unknown strategy 'finetune='"),  # `=` with nothing after it names nothing
    ("finetune=top:3", "--unfreeze 'top:3' is not understood; use layers:N, blocks:K or all"),
    ("finetune=layers:0", "--unfreeze 'layers:0' is not understood"),
])
def test_bad_strategies_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        Strategy.parse(text)
    assert "\n" not in str(error.value)


def test_the_config_keeps_text_and_validates_through_the_parser():
    config = RunConfig(strategies=["head", "finetune=blocks:1", "scratch-cnn"]).validate()
    assert config.strategies == ["head", "finetune=blocks:1", "scratch-cnn"]  # config.yaml keeps the text
    assert [str(s) for s in config.strategy_values()] == config.strategies
    with pytest.raises(ConfigError, match="unknown strategy 'magic'"):
        RunConfig(strategies=["head", "magic"]).validate()
    with pytest.raises(ConfigError, match="--pool-stages works with the head and scratch strategies"):
        RunConfig(strategies=["finetune=layers:2"], pool_stages=1).validate()


def test_a_model_or_strategy_given_twice_is_refused_before_it_trains_twice():
    """The second entry trained again and overwrote the first's folder, leaving two rows for one model."""
    with pytest.raises(ConfigError, match="--models names convnext_atto more than once; give each once"):
        RunConfig(models=["convnext_atto", "efficientnet_lite0", "convnext_atto"]).validate()
    with pytest.raises(ConfigError, match="--strategy names head more than once"):
        RunConfig(strategies=["head", "finetune", "head"]).validate()
