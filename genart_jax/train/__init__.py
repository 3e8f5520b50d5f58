"""Training: state pytrees, the per-device steps and the loop."""

from genart_jax.train.loop import (
    Preempted,
    TrainingDiverged,
    abstract_state,
    train_and_evaluate,
)

__all__ = ["Preempted", "TrainingDiverged", "abstract_state", "train_and_evaluate"]
