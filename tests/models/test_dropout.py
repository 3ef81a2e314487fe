"""The head's CPU dropout: torch's drop rate and scale, repeated by a seed, torch's own where it cannot apply."""
import pytest
import torch
from torch import nn

from showdown.models.classifier import Dropout, Head


def test_drops_the_share_asked_and_keeps_the_mean():
    torch.manual_seed(0)
    out = Dropout(0.2).train()(torch.ones(1000, 1000))
    assert abs((out == 0).float().mean().item() - 0.2) < 0.002
    assert abs(out.mean().item() - 1.0) < 0.005
    kept = out.unique().tolist()
    assert kept[0] == 0.0 and kept[1:] == [pytest.approx(256 / (256 - round(0.2 * 256)))]


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.8])
def test_the_rate_dropped_is_within_a_512th_of_the_one_asked(p):
    torch.manual_seed(1)
    out = Dropout(p).train()(torch.ones(2000, 1000))
    assert abs((out == 0).float().mean().item() - p) < 1 / 512 + 0.002  # the 8-bit step and the sampling noise


def test_a_seed_repeats_the_mask_and_gradients_follow_it():
    x = torch.randn(64, 1280, requires_grad=True)
    torch.manual_seed(3)
    first = Dropout(0.5).train()(x)
    torch.manual_seed(3)
    second = Dropout(0.5).train()(x)
    assert torch.equal(first, second)
    first.sum().backward()
    assert torch.equal(x.grad == 0, first == 0)


@pytest.mark.parametrize("p", [0.0, 1e-3, 0.01, 0.999, 1.0])
def test_rates_that_round_to_none_or_all_use_torch(p):
    x = torch.ones(3, 5)  # an odd count of elements too
    torch.manual_seed(0)
    ours = Dropout(p).train()(x)
    torch.manual_seed(0)
    assert torch.equal(ours, nn.functional.dropout(x, p, True))


def test_evaluation_scripting_and_tracing_see_no_dropout():
    head = Head(8, 3, dropout=0.3).eval()
    x = torch.randn(4, 8)
    assert torch.equal(head(x), head.layers[1](x))
    assert torch.allclose(torch.jit.script(head)(x), head(x))
    assert torch.allclose(torch.jit.trace(head, x)(x), head(x))
