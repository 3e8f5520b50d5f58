"""The architecture and family registries: each architecture's config section, the old flat keys
refused with the new key named (and mapped in saved runs), and a new architecture that is only
its module's registration."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax.cli import main
from genart_jax.config import (
    ConfigError,
    apply_overrides,
    base_config,
    from_json,
    load_config,
    renamed_keys,
    to_json,
)
from genart_jax.models import build_gan, registry
from genart_jax.train.families import FAMILIES, family_of


def test_every_architecture_has_its_section_with_its_defaults():
    cfg = base_config()
    for arch in registry.architectures():
        assert cfg.model[arch.section].to_dict() == dict(arch.defaults)
        assert registry.architecture(arch.family, arch.name) is arch
        assert arch.family in FAMILIES and (not arch.hooks or arch.hooks in FAMILIES)
    hooks = {a.hooks for a in registry.architectures() if a.hooks}
    assert set(registry.families()) | hooks == set(FAMILIES)


@pytest.mark.parametrize("old,new", sorted(renamed_keys().items()))
def test_an_old_flat_key_is_refused_naming_its_new_key(old, new):
    with pytest.raises(ConfigError, match=f"^config key '{old}' is now '{new}'$"):
        apply_overrides(base_config(), {old: "1"})


def test_an_old_flat_key_in_a_recipe_file_is_one_line_and_exit_2(tmp_path, capsys):
    recipe = tmp_path / "old.py"
    recipe.write_text("from genart_jax.config import recipe\n\n\ndef get_config():\n"
                      "    c = recipe('r3gan_digits')\n"
                      "    c.model.r3gan_widths = (8, 8, 8, 8)\n    return c\n")
    assert main(["train", "--config", str(recipe), "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == ("genart: error: config key 'model.r3gan_widths' is now "
                                       "'model.r3gan.widths'\n")


def test_a_run_saved_with_the_old_flat_keys_reads_them_at_their_new_place():
    cfg = load_config("r3gan_digits", {"model.r3gan.widths": "(32, 32, 16, 8)"})
    saved = json.loads(to_json(cfg))
    model = saved["model"]
    for leaf, value in model.pop("r3gan").items():  # as an older version wrote it
        model[f"r3gan_{leaf}"] = value
    for leaf, value in model.pop("dcgan").items():
        model[leaf] = value
    assert from_json(json.dumps(saved)) == cfg


def test_the_arch_is_validated_against_its_family():
    with pytest.raises(ConfigError, match=r"'model.arch' is 'resnet'; choose one of \("):
        apply_overrides(base_config(), {"model.arch": "resnet"})
    with pytest.raises(ConfigError, match=r"'conv' is not a gan architecture; choose one of "
                                          r"\('dcgan', 'mlp', 'r3gan'"):
        apply_overrides(base_config(), {"model.arch": "conv"})


class _TinyG(nn.Module):
    shape: tuple

    @nn.compact
    def __call__(self, z, labels=None, train=True):
        return jnp.tanh(nn.Dense(math.prod(self.shape))(z)).reshape(z.shape[0], *self.shape)


class _TinyD(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x, labels=None, train=True):
        h = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
        return nn.Dense(1)(h)[:, 0]


@pytest.fixture
def toy_architecture():
    """A GAN architecture registered the way a new module registers itself."""
    def build(settings, model, data, *, axis_name, bn_momentum):
        shape = (data.image_size, data.image_size, data.channels)
        return _TinyG(shape), _TinyD(settings.width)

    def check(settings, cfg):
        if settings.width > 64:
            raise ValueError("config key 'model.toy.width' must be at most 64")

    arch = registry.register_architecture(registry.Architecture(
        "toy", family="gan", section="toy", defaults={"width": 8}, build=build, check=check,
        positive=("width",)))
    yield arch
    del registry.ARCHITECTURES[("gan", "toy")]


def test_a_registered_architecture_is_in_the_schema_validated_built_and_trained(
        toy_architecture):
    from genart_jax.train.loop import build_training

    cfg = load_config("gan_mlp_digits", {"model.arch": "toy", "model.toy.width": "16",
                                         "model.latent_dim": "4", "train.batch_size": "8",
                                         "data.image_size": "8"})
    assert cfg.model.toy.width == 16 and family_of(cfg).name == "gan"
    with pytest.raises(ConfigError, match="must be at most 64"):
        apply_overrides(cfg, {"model.toy.width": "65"})
    with pytest.raises(ConfigError, match="'model.toy.width' must be positive"):
        apply_overrides(cfg, {"model.toy.width": "0"})
    g, d = build_gan(cfg.model, cfg.data)
    assert isinstance(g, _TinyG) and d.width == 16
    driver, init_fn = build_training(cfg, jax.devices()[:1])
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    batch = {"image": np.zeros((1, 8, 8, 8, 1), np.float32),
             "label": np.zeros((1, 8), np.int32)}
    state, metrics = driver.step(state, driver.put_batch(batch))
    assert np.isfinite(driver.get_metrics(metrics)["d_loss"])
    assert int(driver.get_state(state).step) == 1


def test_a_section_or_name_is_registered_once(toy_architecture):
    with pytest.raises(ValueError, match="registered already"):
        registry.register_architecture(toy_architecture)
    with pytest.raises(ValueError, match="model.toy is taken"):
        registry.register_architecture(registry.Architecture(
            "toy2", family="gan", section="toy", defaults={}, build=lambda *a, **k: None))
