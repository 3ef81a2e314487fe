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
