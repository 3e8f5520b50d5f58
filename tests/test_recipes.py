"""Recipes that build on each other (`config.recipe`) resolve to the configs they had as
standalone files.

tests/data/recipes_vs_base.json holds, per recipe, the keys whose resolved value differs from
`base_config()`, written from the standalone recipe files before they shared bases. A recipe
change that is meant to change its config updates that file in the same commit.
"""

import json
from pathlib import Path

import pytest

from genart_jax.config import base_config, flatten, load_config, recipe, recipe_names

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "recipes_vs_base.json").read_text())


def _as_json(values: dict) -> dict:
    """Tuples become lists, as in the snapshot file."""
    return json.loads(json.dumps(values))


def _differences_from_base(name: str) -> dict:
    base = _as_json(flatten(base_config().to_dict()))
    resolved = _as_json(flatten(load_config(name).to_dict()))
    return {k: v for k, v in resolved.items() if base.get(k) != v}


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_recipe_resolves_to_its_recorded_config(name):
    assert _differences_from_base(name) == SNAPSHOT[name]


def test_every_recipe_file_is_recorded():
    assert set(recipe_names()) >= set(SNAPSHOT)


def test_recipe_returns_a_fresh_unlocked_config_each_call():
    a, b = recipe("dcgan_digits"), recipe("dcgan_digits")
    a.model.num_classes = 10
    assert not a.is_locked and b.model.num_classes == 0
    assert load_config("dcgan_digits").model.num_classes == 0


def test_derived_recipe_follows_its_base():
    base, derived = load_config("dcgan_digits"), load_config("cdcgan_digits")
    assert derived.model.num_classes == 10
    assert flatten({**derived.to_dict(), "model": {**derived.model.to_dict(), "num_classes": 0},
                    "sample": base.sample.to_dict()}) == flatten(base.to_dict())


if __name__ == "__main__":  # python -m tests.test_recipes NAME...: entries for the snapshot file
    import sys

    print(json.dumps({n: _differences_from_base(n) for n in sys.argv[1:]}, indent=1,
                     sort_keys=True))
