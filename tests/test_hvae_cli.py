"""Every command on a tiny hierarchical VAE (`model.arch=hvae`) through the command line:
training (one process with 2 devices), kill -9 and resume (bitwise: weights, EMA, optimizer,
counters), sample (EMA or raw, one temperature or one per group, GAN options refused), export
and sample --from-export, eval (bits/dim of the test split, and FID/KID/PR with --metrics);
and the recipes' parameter counts and config errors, without training."""

import functools
import json
import re
import time

import jax
import numpy as np
import pytest

from genart_jax import checkpoint
from genart_jax.cli import main
from genart_jax.config import ConfigError, apply_overrides, load_config
from genart_jax.models.hvae import count_params, param_count
from genart_jax.train import hvae as hvae_hooks
from tests.test_r3gan_cli import finish, restore, start
from tests.test_r3gan_cli import tiles as grid_tiles

# 16 px greyscale digits, two resolutions below the image, three latent groups.
TINY = {"data.image_size": 16, "model.hvae.resolutions": (16, 4, 1),
        "model.hvae.widths": (8, 8, 8), "model.hvae.enc_blocks": (1, 1, 1),
        "model.hvae.dec_blocks": (1, 1, 1), "model.hvae.zdim": 2,
        "model.hvae.num_mixtures": 2, "hvae.warmup_steps": 2, "hvae.ema_rate": 0.5}
FLAGS = ["--config", "hvae_digits", *(f"--config.{k}={v}" for k, v in TINY.items()),
         "--config.train.log_every=1", "--config.train.sample_every=0",
         "--config.sample.num=4", "--config.checkpoint.every_minutes=0",
         "--config.checkpoint.every_steps=4", "--config.checkpoint.keep=10",
         "--config.data.prefetch=0", "--config.train.batch_size=8"]
STEPS = 12
tiles = functools.partial(grid_tiles, size=16)  # the tiles of a grid of 16 px images

# The shipped recipes and their parameter counts (hvae_cifar32: VDVAE's CIFAR-10 network, the
# reference PyTorch module's count).
RECIPE_PARAMS = {"hvae_digits": 86_959, "hvae_folder32": 543_644,
                 "hvae_cifar32": 39_145_700, "hvae_folder64": 12_172_324}


def _start(workdir, steps):
    """`genart train` of the tiny HVAE on 2 devices in a fresh process."""
    return start(workdir, steps, 2, flags=FLAGS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """root with `ref` (STEPS steps on 2 devices), `killed` (killed with -9 once its step-4
    checkpoint is complete, then resumed to STEPS) and `clf` (a tiny digits classifier)."""
    from genart_jax.classifier import train_classifier

    root = tmp_path_factory.mktemp("hvae_cli")
    reference = _start(root / "ref", STEPS)
    cfg = load_config("hvae_digits", {k: str(v) for k, v in TINY.items()})
    train_classifier(cfg.data, root / "clf", steps=3, width=8, feature_dim=16, progress=False)
    outputs = {"ref": finish(reference)}
    killed = _start(root / "killed", STEPS)
    t0 = time.time()
    while killed.poll() is None and not checkpoint.latest_step(root / "killed"):
        assert time.time() - t0 < 300, "the killed run did not get past step 4"
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before the kill"
    killed.kill()
    killed.wait()
    outputs["resumed"] = finish(_start(root / "killed", STEPS))
    return root, outputs


@pytest.mark.slow
def test_kill_9_then_resume_equals_the_uninterrupted_run(runs):
    root, outputs = runs
    resumed = re.search(r"Resuming from checkpoint (\d+) ", outputs["resumed"][0])
    assert resumed and 4 <= int(resumed[1]) < STEPS, outputs["resumed"][0]
    want, _, step = restore(root / "ref")
    got, _, _ = restore(root / "killed")
    assert step == STEPS and int(want.step) == STEPS
    # the EMA moved away from the weights, so comparing it can fail
    assert not np.array_equal(np.asarray(jax.tree.leaves(want.ema_params)[0]),
                              np.asarray(jax.tree.leaves(want.params)[0]))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    records = [json.loads(r) for r in (root / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert {"bits_per_dim", "rate", "distortion", "grad_norm", "skipped_updates", "kl_g0",
            "kl_g2"} <= set(records[0])
    assert all(np.isfinite(r["bits_per_dim"]) and r["skipped_updates"] == 0 for r in records)
    assert "Training hvae VAE" in outputs["ref"][0]


@pytest.mark.slow
def test_sample_temperature_export_and_refused_options(runs, tmp_path, capsys):
    root, _ = runs
    work = root / "ref"

    def sample(name, *args, workdir=work, code=0):
        src = ["--workdir", str(workdir)] if workdir else []
        assert main(["sample", *src, "--out", str(tmp_path / name), *args]) == code, \
            capsys.readouterr().err
        return tmp_path / name

    ema = tiles(sample("ema.png", "--num", "4"), 2, 4)
    assert (tmp_path / "ema_reconstructions.png").is_file()
    out = capsys.readouterr().out
    assert "EMA HVAE prior, temperature 1" in out and "reconstructions" in out
    raw = tiles(sample("raw.png", "--num", "4", "--no-ema"), 2, 4)
    assert not all(np.array_equal(a, b) for a, b in zip(ema, raw, strict=True))
    cold = tiles(sample("cold.png", "--num", "4", "--temperature", "0.1"), 2, 4)
    assert not all(np.array_equal(a, b) for a, b in zip(ema, cold, strict=True))
    again = tiles(sample("per_group.png", "--num", "4", "--temperature", "1,1,1"), 2, 4)
    for a, b in zip(again, ema, strict=True):  # three equal values = the one value
        np.testing.assert_array_equal(a, b)
    assert "temperature 1" in capsys.readouterr().out

    sample("x.png", "--temperature", "0.5,0.5", code=2)
    assert "one per latent group (3 for this model), got 2" in capsys.readouterr().err
    sample("x.png", "--temperature", "hot", code=2)
    # GAN options steer the top group (TopGroupLatents): truncation 0 is its prior mean, and
    # the lower groups are one fixed draw, so every image is the same.
    flat = tiles(sample("flat.png", "--num", "4", "--truncation", "0"), 2, 4)
    assert all(np.array_equal(t, flat[0]) for t in flat)
    direction = tmp_path / "d.npy"
    np.save(direction, np.full(2, 3.0, np.float32))  # the top group: 1 x 1 x zdim 2
    pushed = tiles(sample("pushed.png", "--num", "4", "--truncation", "0", "--direction",
                           str(direction)), 2, 4)
    assert not np.array_equal(pushed[0], flat[0])
    assert "top group steered" in capsys.readouterr().out
    np.save(direction, np.ones(3, np.float32))
    sample("x.png", "--direction", str(direction), code=2)
    assert "latents are (2,)" in capsys.readouterr().err
    sample("x.png", "--theme", "3", code=2)

    export = tmp_path / "g.msgpack"
    assert main(["export", "--workdir", str(work), "--out", str(export)]) == 0
    exported = tiles(sample("exported.png", "--num", "4", "--from-export", str(export),
                             workdir=None), 2, 4)
    for a, b in zip(exported, ema, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_eval_bits_per_dim_and_sample_quality(runs, capsys):
    root, _ = runs
    work, clf = root / "ref", root / "clf"
    assert main(["eval", "--workdir", str(work), "--limit", "40"]) == 0
    line = capsys.readouterr().out
    assert re.search(r"-ELBO [\d.]+ nats = [\d.]+ bits/dim", line), line
    r = json.loads((work / "eval.json").read_text().splitlines()[-1])
    assert r["step"] == STEPS and r["examples"] == 40 and len(r["kl_per_group_nats"]) == 3
    assert r["neg_elbo_bits_per_dim"] == pytest.approx(
        r["distortion_bits_per_dim"] + r["rate_bits_per_dim"], rel=1e-6)
    assert 0 < r["neg_elbo_bits_per_dim"] < 8.5  # below a uniform 8-bit model (8 bits/dim)+
    assert main(["eval", "--workdir", str(work), "--metrics", "fid,kid,pr", "--classifier",
                 str(clf), "--num", "48", "--limit", "48", "--temperature", "0.5"]) == 0
    r = json.loads((work / "eval.json").read_text().splitlines()[-1])
    assert r["temperature"] == [0.5] and r["pixels"] == "greedy"
    keys = [k for k in r if k.startswith(("FID", "KID", "precision", "recall"))]
    assert len(keys) >= 4 and all(np.isfinite(r[k]) for k in keys)
    assert "neg_elbo_bits_per_dim" in r


def test_recipes_have_their_parameter_counts():
    for name, want in RECIPE_PARAMS.items():
        cfg = load_config(name)
        assert count_params(cfg.data.image_size, cfg.data.channels,
                            **cfg.model.hvae.to_dict()) == want, name
    for name in ("hvae_digits", "hvae_folder32"):  # the formula against the module's shapes
        assert param_count(hvae_hooks.build_model(load_config(name))) == RECIPE_PARAMS[name]


@pytest.mark.parametrize("overrides, message", [
    ({"model.hvae.resolutions": "(16, 4, 1)"}, "resolutions must start at the image size 32"),
    ({"model.num_classes": "10"}, "unconditional"),
    ({"hvae.temperature": "(-1.0,)"}, "hvae.temperature"),
    ({"hvae.optimizer": "sgd"}, "'hvae.optimizer'"),
    ({"hvae.ema_rate": "1.0"}, "'hvae.ema_rate' must be in [0, 1)"),
    ({"model.hvae.bottleneck": "0.01"}, "model.hvae.bottleneck"),
])
def test_bad_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_config("hvae_digits", overrides)
    assert "\n" not in str(e.value)


def test_temperatures_one_or_one_per_group():
    model = hvae_hooks.build_model(load_config("hvae_digits"))
    assert hvae_hooks.temperatures(model, 0.5).tolist() == [0.5] * model.num_groups
    assert hvae_hooks.temperatures(model, (0.5,)).shape == (model.num_groups,)
    per = np.linspace(1, 0, model.num_groups)
    np.testing.assert_allclose(hvae_hooks.temperatures(model, per), per)
    with pytest.raises(ValueError, match="one per latent group"):
        hvae_hooks.temperatures(model, (1.0, 0.5))


def test_sample_i_depends_only_on_seed_and_i(monkeypatch):
    """A grid is the start of a larger draw, whatever the chunking, pixels drawn from the DMoL
    included; another seed draws other images."""
    cfg = load_config("hvae_digits", {k: str(v) for k, v in TINY.items()})
    model = hvae_hooks.build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 1), np.uint8),
                        key=jax.random.PRNGKey(1))["params"]
    params = jax.tree.map(lambda p: p + 0.05 * np.sin(np.arange(p.size)).reshape(p.shape),
                          params)  # no zero convs: the prior is not N(0, I) everywhere
    c = apply_overrides(cfg, {"hvae.pixels": "sample"})  # pixel draws too
    many = hvae_hooks.prior_images(c, params, num=8, seed=3)  # one chunk of 8
    monkeypatch.setattr(hvae_hooks, "CHUNK", 4)  # chunks of 4: one more compile
    np.testing.assert_array_equal(hvae_hooks.prior_images(c, params, num=8, seed=3), many)
    np.testing.assert_array_equal(hvae_hooks.prior_images(c, params, num=4, seed=3), many[:4])
    assert not np.array_equal(hvae_hooks.prior_images(c, params, num=4, seed=4), many[:4])
