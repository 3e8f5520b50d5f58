"""genart_jax: generative art models (GANs, VAEs) in JAX/Flax, data-parallel from one CPU to a
cluster. The library entry point is `genart_jax.train.train_and_evaluate(config, workdir)`."""

__version__ = "0.1.0"
