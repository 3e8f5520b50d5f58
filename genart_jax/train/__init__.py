"""Training: state pytrees, the per-device steps and the loop."""

from genart_jax.train.loop import TrainingDiverged, abstract_state, train_and_evaluate

__all__ = ["TrainingDiverged", "abstract_state", "train_and_evaluate"]
