"""The recipes: one module per recipe, each with `get_config()` -> ml_collections.ConfigDict.

They ship inside the package, so a wheel or git-URL install trains with them; `genart train
--config NAME` finds them by name (`genart_jax.config.recipe_names()`), `--config PATH` loads a
user's own file.
"""
