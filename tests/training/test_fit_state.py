"""fit's state: early stopping keeps the best weights and counts the epochs without one; a checkpoint holds the
state under the keys older checkpoints have, so --resume reads both."""
import math

from torch import nn

from showdown.training.loop import FitOptions, FitState

OLDER_CHECKPOINT_KEYS = {"epoch", "best_loss", "best_state", "since_best", "history", "done"}


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience_epochs_without_one():
    model, state = nn.Linear(2, 2), FitState()
    assert state.best_loss == math.inf and not state.early_stop(1.0, model, patience=2)
    best = state.best_state["weight"].clone()
    model.weight.data += 1
    assert not state.early_stop(0.99995, model, patience=2)  # within 1e-4: not better
    assert state.early_stop(1.5, model, patience=2) and state.since_best == 2
    assert state.best_loss == 1.0 and (state.best_state["weight"] == best).all()


def test_the_checkpointed_state_keeps_its_keys():
    state = FitState(epoch=3, best_loss=0.5, since_best=1, history=[{"epoch": 1}], done=False)
    assert set(state.to_dict()) == OLDER_CHECKPOINT_KEYS
    assert FitState.from_dict({**state.to_dict(), "model": "ignored"}) == state
    assert FitOptions().phase == "head" and not FitOptions().parallel


def test_a_checkpoint_that_cannot_be_read_is_one_warning_and_the_phase_starts_again(tmp_path, caplog):
    """A checkpoint cut short (a full disk under an older version, a copy interrupted) is no traceback on --resume:
    the phase trains from its first epoch, and the checkpoint is written anew."""
    import torch

    from showdown.training.loop import TrainSettings, fit

    checkpoint = tmp_path / "checkpoint-finetune.pt"
    torch.manual_seed(0)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(2)]
    for damaged in (b"PK\x03\x04 cut short", b"hello world\n", b"\x80\x02" + bytes(300)):  # each its own error
        checkpoint.write_bytes(damaged)
        history = fit(nn.Linear(4, 2), batches, batches, TrainSettings(epochs=3, patience=3), checkpoint=checkpoint)
        assert [row["epoch"] for row in history] == [1, 2, 3]
    assert "is damaged (" in caplog.text and "starts again from its first epoch" in caplog.text
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3  # a readable one in its place
