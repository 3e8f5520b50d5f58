"""Class-conditional GANs ("themes"): projection discriminators, label embeddings, the
conditional train step across devices and drivers, theme sampling, the CLI and export."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from genart_jax import losses, sampling
from genart_jax.cli import main
from genart_jax.config import load_config
from genart_jax.models import build_gan
from genart_jax.models.conditioning import ConditionalBatchNorm
from genart_jax.train.gan_step import fake_labels
from genart_jax.train.loop import abstract_state, build_training
from tests.conftest import TINY_DCGAN, tiny_config
from tests.test_parallel import assert_gan_runs_match, assert_trees_close, make_batches, run_steps

NC = "10"


def cond_config(arch="dcgan", **overrides):
    return tiny_config(arch, **{"model.num_classes": NC, **overrides})


def images(cfg, n, key=0):
    s, c = cfg.data.image_size, cfg.data.channels
    return jax.random.uniform(jax.random.PRNGKey(key), (n, s, s, c), minval=-1, maxval=1)


def init_models(cfg, key=0):
    g, d = build_gan(cfg.model, cfg.data)
    y = jnp.arange(4, dtype=jnp.int32) if cfg.model.num_classes else None
    z = jnp.zeros((4, cfg.model.latent_dim))
    x = jnp.zeros((4, cfg.data.image_size, cfg.data.image_size, cfg.data.channels))
    gv = g.init(jax.random.PRNGKey(key), z, y, train=False)
    dv = d.init(jax.random.PRNGKey(key + 1), x, y, train=False)
    return g, d, gv, dv


def dense_inputs(module, variables, x, y):
    """The module's output and the input of each Dense layer it calls (phi is the last)."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            seen.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        out = module.apply(variables, x, y, train=False)
    return out, seen[-1]


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_projection_discriminator_is_linear_plus_projection(arch):
    cfg = cond_config(arch)
    _, d, _, dv = init_models(cfg)
    p = dv["params"]
    x = images(cfg, 4, key=5)
    y = jnp.asarray([3, 3, 7, 0], jnp.int32)
    logits, phi = dense_inputs(d, dv, x, y)
    last = p[max((k for k in p if k.startswith("Dense_")), key=lambda k: int(k[6:]))]
    linear = np.asarray(phi) @ np.asarray(last["kernel"])[:, 0] + np.asarray(
        last.get("bias", np.zeros(1)))[0]
    embed = np.asarray(p["projection"]["embedding"])
    proj = np.sum(embed[np.asarray(y)] * np.asarray(phi), axis=-1)
    assert np.abs(proj).max() > 1e-3  # the projection term is not negligible here
    np.testing.assert_allclose(logits, linear + proj, rtol=1e-4, atol=1e-5)
    # The same image under another label differs by exactly the change of projection.
    y2 = jnp.asarray([1, 3, 7, 9], jnp.int32)
    logits2 = d.apply(dv, x, y2, train=False)
    np.testing.assert_allclose(
        logits2 - logits, np.sum((embed[np.asarray(y2)] - embed[np.asarray(y)]) * phi, -1),
        rtol=1e-4, atol=1e-5)


def distinct_classes(params):
    """`params` with noise added to every class table, so that classes differ from the start
    (a fresh conditional BatchNorm gives every class scale 1 and shift 0)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.3 * jax.random.normal(jax.random.PRNGKey(len(v.shape)), v.shape)
        if "embedding" in jax.tree_util.keystr(p) else v, params)


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_conditional_models_need_labels_and_unconditional_take_none(arch):
    cfg = cond_config(arch)
    g, d, gv, dv = init_models(cfg)
    z, x = jnp.zeros((2, 16)), images(cfg, 2)
    with pytest.raises(ValueError, match="generator is conditional.*pass labels"):
        g.apply(gv, z, train=False)
    with pytest.raises(ValueError, match="discriminator is conditional.*pass labels"):
        d.apply(dv, x, train=False)
    ug, _, ugv, _ = init_models(tiny_config(arch))
    with pytest.raises(ValueError, match="unconditional.*takes no labels"):
        ug.apply(ugv, z, jnp.zeros((2,), jnp.int32), train=False)
    # The label changes the image (class tables made to differ, as training makes them: the
    # conditional BatchNorm starts with every class at scale 1, shift 0).
    gv = {**gv, "params": distinct_classes(gv["params"])}
    zz = jax.random.normal(jax.random.PRNGKey(0), (2, 16))
    a = g.apply(gv, zz, jnp.asarray([1, 1]), train=False)
    b = g.apply(gv, zz, jnp.asarray([2, 2]), train=False)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4


def tree_shapes(tree):
    return {jax.tree_util.keystr(p): tuple(v.shape)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# The unconditional tiny models' parameters (names and shapes) as before conditioning existed:
# checkpoints and exports of unconditional runs must keep loading.
UNCONDITIONAL = {
    "dcgan": (
        {"['BatchNorm_0']['bias']": (16,), "['BatchNorm_0']['scale']": (16,),
         "['BatchNorm_1']['bias']": (8,), "['BatchNorm_1']['scale']": (8,),
         "['Dense_0']['kernel']": (16, 256), "['UpConv_0']['kernel']": (4, 4, 16, 8),
         "['UpConv_1']['kernel']": (4, 4, 8, 1)},
        {"['BatchNorm_0']['bias']": (16,), "['BatchNorm_0']['scale']": (16,),
         "['Conv_0']['kernel']": (4, 4, 1, 8), "['Conv_1']['kernel']": (4, 4, 8, 16),
         "['Dense_0']['kernel']": (256, 1)}),
    "mlp": (
        {"['Dense_0']['bias']": (32,), "['Dense_0']['kernel']": (16, 32),
         "['Dense_1']['bias']": (64,), "['Dense_1']['kernel']": (32, 64),
         "['Dense_2']['bias']": (784,), "['Dense_2']['kernel']": (64, 784)},
        {"['Dense_0']['bias']": (64,), "['Dense_0']['kernel']": (784, 64),
         "['Dense_1']['bias']": (32,), "['Dense_1']['kernel']": (64, 32),
         "['Dense_2']['bias']": (1,), "['Dense_2']['kernel']": (32, 1)}),
}


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_unconditional_param_trees_unchanged_and_conditional_adds_two_tables(arch):
    _, d, gv, dv = init_models(tiny_config(arch))
    assert tree_shapes(gv["params"]) == UNCONDITIONAL[arch][0]
    assert tree_shapes(dv["params"]) == UNCONDITIONAL[arch][1]
    cfg = cond_config(arch)
    _, _, cgv, cdv = init_models(cfg)
    g_extra = set(tree_shapes(cgv["params"])) - set(UNCONDITIONAL[arch][0])
    d_extra = set(tree_shapes(cdv["params"])) - set(UNCONDITIONAL[arch][1])
    if arch == "mlp":  # a scale and a shift table per hidden layer
        assert g_extra == {f"['film{i}_{kind}']['embedding']" for i in range(2)
                           for kind in ("scale", "shift")}
    else:  # each BatchNorm's scale and bias become per-class tables
        bn = {k for k in UNCONDITIONAL[arch][0] if "BatchNorm" in k}
        assert set(UNCONDITIONAL[arch][0]) - set(tree_shapes(cgv["params"])) == bn
        assert tree_shapes(cgv["params"]) == {
            **{k: v for k, v in UNCONDITIONAL[arch][0].items() if k not in bn},
            **{k.replace("BatchNorm", "ConditionalBatchNorm").replace(
                "['bias']", "['shift']['embedding']").replace(
                "['scale']", "['scale']['embedding']"): (10, *v) for k, v in
               UNCONDITIONAL[arch][0].items() if k in bn}}
    assert d_extra == {"['projection']['embedding']"}
    # With a zero projection the conditional D is the unconditional D, same init, same logits.
    shared = {k: v for k, v in cdv["params"].items() if k != "projection"}
    assert_trees_close(shared, dv["params"], atol=0)
    zero = {**cdv, "params": {**cdv["params"], "projection": {
        "embedding": jnp.zeros_like(cdv["params"]["projection"]["embedding"])}}}
    x = images(cfg, 4, key=3)
    cd = build_gan(cfg.model, cfg.data)[1]
    np.testing.assert_array_equal(cd.apply(zero, x, jnp.arange(4), train=False),
                                  d.apply(dv, x, train=False))


def test_conditional_batch_norm_is_shared_normalisation_then_class_scale_and_shift():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 3, 4)) * 2.0 + 1.0
    y = jnp.asarray([0, 2, 1, 2, 0, 1])
    cbn = ConditionalBatchNorm(3, train=True)
    v = cbn.init(jax.random.PRNGKey(1), x, y)
    scale = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, 4)))
    shift = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (3, 4)))
    v = {**v, "params": {"scale": {"embedding": scale}, "shift": {"embedding": shift}}}
    out, _ = cbn.apply(v, x, y, mutable=["batch_stats"])
    xs = np.asarray(x, np.float64)
    mean, var = xs.mean((0, 1, 2)), xs.var((0, 1, 2))
    want = ((xs - mean) / np.sqrt(var + 1e-5) * scale[np.asarray(y)][:, None, None, :]
            + shift[np.asarray(y)][:, None, None, :])
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_fake_labels_uniform_and_independent_of_device_count():
    key = jax.random.PRNGKey(7)

    def draw(n_dev, batch):
        mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
        fn = jax.shard_map(lambda: fake_labels(key, batch // n_dev, 10, "data"), mesh=mesh,
                           in_specs=(), out_specs=jax.P("data"))
        return np.asarray(jax.jit(fn)())

    one, eight = draw(1, 4000), draw(8, 4000)
    np.testing.assert_array_equal(one, eight)
    assert one.dtype == np.int32 and one.min() == 0 and one.max() == 9
    counts = np.bincount(one, minlength=10)
    chi2 = float(np.sum((counts - 400.0) ** 2 / 400.0))
    assert chi2 < 30.0, counts  # 9 degrees of freedom: p < 0.001 beyond 27.9
    assert not np.array_equal(one, draw(1, 4000)[::-1])


@pytest.fixture(scope="module")
def cond_reference():
    cfg = cond_config("dcgan")
    batches = make_batches(cfg)
    driver, state, history = run_steps(cfg, "shard_map", 1, batches)
    return cfg, batches, driver.get_state(state), history


@pytest.mark.parametrize("driver_name", ["shard_map", "pmap"])
def test_conditional_eight_devices_match_one_device(cond_reference, driver_name):
    cfg, batches, ref, ref_history = cond_reference
    driver, state, history = run_steps(cfg, driver_name, 8, batches)
    host = driver.get_state(state)
    assert_gan_runs_match(host, ref, history, ref_history)
    # The embedding tables train.
    init = abstract_state(cfg)
    assert init.g_params["ConditionalBatchNorm_0"]["scale"]["embedding"].shape == (10, 16)
    # The class shifts start at 0 and train.
    assert np.abs(host.g_params["ConditionalBatchNorm_0"]["shift"]["embedding"]).max() > 0
    assert host.d_params["projection"]["embedding"].shape == (10, 256)


def test_real_labels_reach_the_discriminator(cond_reference):
    cfg, batches, ref, _ = cond_reference
    shuffled = [dict(b, label=(b["label"] + 1) % 10) for b in batches]
    driver, state, _ = run_steps(cfg, "shard_map", 1, shuffled)
    delta = np.abs(np.asarray(driver.get_state(state).d_params["projection"]["embedding"])
                   - np.asarray(ref.d_params["projection"]["embedding"]))
    assert delta.max() > 1e-6


def test_generator_update_uses_the_fake_labels_of_its_forward():
    """g_loss equals the loss of D (after its update) on G(z, y) with the documented draws:
    z from named_key(step key, "latent", 0), y uniform from named_key(step key, "fake_label",
    0), per example index."""
    from genart_jax.train.step_common import named_key

    cfg = cond_config("mlp")
    batch = make_batches(cfg)[0]
    driver, init_fn = build_training(cfg, jax.devices()[:1])
    state0 = driver.get_state(driver.init_state(init_fn, jax.random.PRNGKey(0)))
    state, metrics = driver.step(driver.init_state(init_fn, jax.random.PRNGKey(0)),
                                 driver.put_batch(batch))
    new = driver.get_state(state)
    key = jax.random.fold_in(state0.key, 0)
    idx = jnp.arange(cfg.train.batch_size)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(named_key(key, "latent", 0), i),
                                             (16,)))(idx)
    y = jax.vmap(lambda i: jax.random.randint(
        jax.random.fold_in(named_key(key, "fake_label", 0), i), (), 0, 10, jnp.int32))(idx)
    g, d = build_gan(cfg.model, cfg.data)
    fake = g.apply({"params": state0.g_params}, z, y, train=True)
    want = losses.generator_loss(d.apply({"params": new.d_params}, fake, y, train=True),
                                 cfg.train.g_loss)
    got = driver.get_metrics(metrics)["g_loss"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    other = losses.generator_loss(d.apply({"params": new.d_params}, fake, (y + 1) % 10,
                                          train=True), cfg.train.g_loss)
    assert abs(float(other) - float(want)) > 1e-6  # the labels matter to this number


def test_conditional_sampling_themes_and_recalibration(tmp_path):
    cfg = cond_config("dcgan")
    driver, init_fn = build_training(cfg, jax.devices()[:1])
    state = driver.get_state(driver.init_state(init_fn, jax.random.PRNGKey(0)))
    state = state.replace(ema_g_params=distinct_classes(state.ema_g_params))
    params, stats = sampling.generator_variables(cfg, state, use_ema=True)
    assert not np.allclose(jax.tree.leaves(stats)[0], jax.tree.leaves(state.g_batch_stats)[0])
    labels, ncols = sampling.theme_labels(7, 10, [1, 4, 7])
    assert labels.tolist() == [1, 4, 7, 1, 4, 7, 1] and ncols == 3
    assert sampling.theme_labels(12, 10)[0].tolist() == [*range(10), 0, 1]
    assert sampling.theme_labels(5, 0) == (None, None)
    threes = sampling.generate(cfg, params, stats, num=5, seed=1, labels=np.full(5, 3))
    more = sampling.generate(cfg, params, stats, num=9, seed=1, labels=np.full(9, 3))
    np.testing.assert_allclose(threes, more[:5], atol=1e-5)
    fours = sampling.generate(cfg, params, stats, num=5, seed=1, labels=np.full(5, 4))
    assert np.abs(threes - fours).max() > 1e-4
    default = sampling.generate(cfg, params, stats, num=10, seed=1)  # classes 0..9 in order
    np.testing.assert_allclose(default[3], threes[3], atol=1e-5)  # sample 3: latent 3, class 3
    grid = sampling.sample_grid(cfg, params, stats, num=9, seed=1, themes=[1, 4, 7])
    assert grid.shape == (3 * 18 + 2, 3 * 18 + 2, 1)
    with pytest.raises(ValueError, match="0..9"):
        sampling.generate(cfg, params, stats, num=2, seed=1, labels=np.asarray([1, 10]))
    ucfg = tiny_config("dcgan")
    ustate = abstract_state(ucfg)
    with pytest.raises(ValueError, match="need a conditional model"):
        sampling.generate(ucfg, ustate.g_params, ustate.g_batch_stats, num=2, seed=0,
                          labels=np.zeros(2))


def png(path):
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.mark.slow
def test_cli_train_sample_themes_export(tmp_path, capsys):
    workdir = tmp_path / "run"
    tiny = [f"--config.{k}={v}" for k, v in TINY_DCGAN.items()]
    proc = subprocess.run(
        [sys.executable, "-m", "genart_jax.cli", "train", "--config", "cdcgan_digits",
         "--workdir", str(workdir), "--steps", "4", "--no-progress", *tiny,
         "--config.train.sample_every=0", "--config.sample.num=20"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # The training grid: 20 samples, one class per column (10 columns, 2 rows), upscaled 2x.
    assert png(workdir / "samples" / "final.png").shape == (2 * 38, 2 * 182)

    out = tmp_path / "themes.png"
    assert main(["sample", "--workdir", str(workdir), "--theme", "1,4,7", "--num", "9",
                 "--out", str(out)]) == 0
    assert "one theme per column: 1,4,7" in capsys.readouterr().out
    grid = png(out)
    assert grid.shape == (5 * 56, 5 * 56) and grid.std() > 1.0  # 3x3 cells of 16+2 px, x5
    assert main(["sample", "--workdir", str(workdir), "--theme", "12", "--out",
                 str(tmp_path / "bad.png")]) == 2
    assert "--theme classes must be in 0..9" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()

    single = tmp_path / "three.png"
    assert main(["sample", "--workdir", str(workdir), "--theme", "3", "--num", "4",
                 "--out", str(single)]) == 0
    export = tmp_path / "g.msgpack"
    assert main(["export", "--workdir", str(workdir), "--out", str(export)]) == 0
    exported = tmp_path / "exported.png"
    assert main(["sample", "--from-export", str(export), "--theme", "3", "--num", "4",
                 "--out", str(exported)]) == 0
    np.testing.assert_array_equal(png(exported), png(single))
    assert main(["sample", "--from-export", str(export), "--num", "10", "--out",
                 str(tmp_path / "all.png")]) == 0
    assert png(tmp_path / "all.png").shape == (2 * 20, 2 * 182)  # one row of 10 classes


def test_labels_outside_num_classes_are_one_clear_error(tmp_path, capsys):
    from genart_jax.data import DataError, check_label_range

    check_label_range(np.asarray([[0, 9]]), 10)
    check_label_range(np.asarray([[0, 12]]), 0)  # unconditional models ignore labels
    with pytest.raises(DataError, match="label 12, outside 0..9"):
        check_label_range(np.asarray([[0, 12]]), 10)
    with pytest.raises(DataError, match="label -1"):
        check_label_range(np.asarray([[-1, 3]]), 10)
    tiny = [f"--config.{k}={v}" for k, v in TINY_DCGAN.items()]
    code = main(["train", "--config", "cdcgan_digits", "--workdir", str(tmp_path), *tiny,
                 "--config.model.num_classes=5", "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "outside 0..4 of model.num_classes=5" in err
    assert "Traceback" not in err


def test_cdcgan_digits_recipe():
    cfg = load_config("cdcgan_digits")
    base = load_config("dcgan_digits")
    assert cfg.model.num_classes == 10 and cfg.model.family == "gan"
    for key in ("arch", "latent_dim", "dcgan"):  # dcgan: the section of g_width and d_width
        assert cfg.model[key] == base.model[key]
    assert cfg.data == base.data and cfg.train == base.train
