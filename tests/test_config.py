"""Config schema, recipe files, overrides and their errors."""

import pytest

from genart_jax.config import (
    ConfigError,
    apply_overrides,
    base_config,
    from_json,
    load_config,
    recipe_names,
    to_json,
    validate,
)


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_loads_locked_and_round_trips_through_json(name):
    cfg = load_config(name)
    assert cfg.is_locked
    assert from_json(to_json(cfg)) == cfg


def test_default_recipe_is_dcgan_on_digits():
    cfg = load_config(None)
    assert (cfg.model.arch, cfg.data.name) == ("dcgan", "digits")


def test_overrides_are_parsed_by_type():
    cfg = apply_overrides(load_config("dcgan_digits"), {
        "train.steps": "7", "g_optimizer.learning_rate": "1e-3", "data.cache": "false",
        "model.mlp_gan.g_hidden": "(8, 16)", "train.driver": "pmap"})
    assert cfg.train.steps == 7 and cfg.g_optimizer.learning_rate == 1e-3
    assert cfg.data.cache is False and cfg.model.mlp_gan.g_hidden == (8, 16)
    assert cfg.train.driver == "pmap"


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match="unknown config key 'train.batchsize'.*"
                                          "'train.batch_size'"):
        apply_overrides(base_config(), {"train.batchsize": "8"})
    # A right name in the wrong section points at the section that has it.
    with pytest.raises(ConfigError, match="'model.steps'.*'train.steps'"):
        apply_overrides(base_config(), {"model.steps": "8"})


def test_wrong_types_and_values_are_errors():
    with pytest.raises(ConfigError, match="train.steps.*expected int"):
        apply_overrides(base_config(), {"train.steps": "many"})
    with pytest.raises(ConfigError, match="data.cache.*expected bool"):
        apply_overrides(base_config(), {"data.cache": "perhaps"})
    with pytest.raises(ConfigError, match="'model.arch' is 'resnet'"):
        apply_overrides(base_config(), {"model.arch": "resnet"})
    assert apply_overrides(base_config(), {"model.num_classes": "10"}).model.num_classes == 10
    with pytest.raises(ConfigError, match="'model.num_classes' must be >= 0"):
        apply_overrides(base_config(), {"model.num_classes": "-1"})
    with pytest.raises(ConfigError, match="not a vae architecture"):
        apply_overrides(base_config(), {"model.family": "vae"})  # arch dcgan
    with pytest.raises(ConfigError, match="data.on_device=true needs"):
        apply_overrides(base_config(), {"data.on_device": "true", "train.driver": "pmap"})
    with pytest.raises(ConfigError, match="train.batch_size' must be positive"):
        apply_overrides(base_config(), {"train.batch_size": "0"})
    bad = base_config()
    bad.train.unlock()
    bad.train.stpes = 5
    with pytest.raises(ConfigError, match="'train.stpes'.*'train.steps'"):
        validate(bad)


def test_recipe_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_config(str(empty))


def test_recipes_ship_in_the_package_and_the_old_path_still_names_them():
    names = recipe_names()
    assert {"dcgan_digits", "r3gan_digits", "vae_digits"} <= set(names)
    # the recipes' old place in the repository, as the README's older commands wrote it
    assert load_config("configs/dcgan_digits.py") == load_config("dcgan_digits")
    with pytest.raises(ConfigError, match=r"not found.*'dcgan_digits'"):
        load_config("dcgan_digitz")
