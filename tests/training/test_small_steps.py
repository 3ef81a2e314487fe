"""What makes a head on cached features train fast: batches as slices, fused Adam where it applies, one thread
for small steps, and each of them leaves the results and the process as they should be."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from showdown.device import CPU, one_thread, small_steps
from showdown.training.batches import InOrder, rows
from showdown.training.loop import TrainSettings, make_optimizer


def test_in_order_batches_are_the_data_loaders():
    x, y = torch.randn(130, 7), torch.arange(130)
    ours = list(InOrder(x, y, 64))
    theirs = list(DataLoader(TensorDataset(x, y), batch_size=64))
    assert len(ours) == len(theirs) == len(InOrder(x, y, 64)) == 3
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(ours, theirs))


def test_sorted_reads_give_the_same_rows():
    source, index = torch.randn(50, 4), torch.randperm(50)[:17]
    assert torch.equal(rows(source, index, sorted_reads=True), source[index])


def test_fused_adam_where_every_parameter_allows_it_and_groups_are_not_used_up():
    layer = nn.Linear(4, 2)
    assert make_optimizer(list(layer.parameters()), TrainSettings()).defaults["fused"] is True
    from_generator = make_optimizer([{"params": (p for p in layer.parameters())}], TrainSettings())
    assert len(from_generator.param_groups[0]["params"]) == 2  # a generator is handed on whole, not fused
    assert not from_generator.defaults["fused"]


def test_one_thread_inside_and_the_count_restored_after_an_error():
    threads = torch.get_num_threads()
    try:
        with one_thread(CPU):
            assert torch.get_num_threads() == 1
            raise KeyError("inside")
    except KeyError:
        pass
    assert torch.get_num_threads() == threads
    with one_thread(CPU, when=False):
        assert torch.get_num_threads() == threads


def test_a_linear_head_has_small_steps_and_an_mlp_head_not():
    assert small_steps(nn.Linear(1280, 5), 64)
    assert not small_steps(nn.Sequential(nn.Linear(1280, 1024), nn.Linear(1024, 10)), 256)
