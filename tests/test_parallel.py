"""Both drivers on 8 simulated devices must match a single-device run of the same global batch.

These tests fail if the cross-device averaging of gradients (or of BatchNorm statistics) is
removed: each device would then step on its own slice and the replicas would differ from the
single-device run.
"""

import jax
import numpy as np
import pytest

from genart_jax.parallel import ParallelError, check_batch_divisible, make_driver
from genart_jax.train.loop import build_training
from tests.conftest import tiny_config

STEPS = 3


def run_steps(cfg, driver_name, num_devices, batches):
    cfg_driver = tiny_config_like(cfg, driver_name)
    driver, init_fn = build_training(cfg_driver, jax.devices()[:num_devices])
    state = driver.init_state(init_fn, jax.random.PRNGKey(cfg.seed))
    history = []
    for batch in batches:
        state, metrics = driver.step(state, driver.put_batch(batch))
        history.append(driver.get_metrics(metrics))
    return driver, state, history


def tiny_config_like(cfg, driver_name):
    from genart_jax.config import apply_overrides
    return apply_overrides(cfg, {"train.driver": driver_name})


def make_batches(cfg, d_steps=1):
    rng = np.random.default_rng(1)
    s, c, b = cfg.data.image_size, cfg.data.channels, cfg.train.batch_size
    return [{"image": rng.uniform(-1, 1, (d_steps, b, s, s, c)).astype(np.float32),
             "label": rng.integers(0, 10, (d_steps, b)).astype(np.int32)}
            for _ in range(STEPS)]


def assert_trees_close(a, b, atol):
    flat_a, _ = jax.tree_util.tree_flatten_with_path(a)
    flat_b = jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    for (path, x), y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0,
                                   err_msg=jax.tree_util.keystr(path))


def assert_gan_runs_match(state, ref_state, history, ref_history):
    """Two GAN runs agree: every state field to 1e-5 and every logged metric to 1e-4."""
    for field in ("g_params", "d_params", "g_batch_stats", "d_batch_stats", "ema_g_params",
                  "g_opt_state", "d_opt_state"):
        assert_trees_close(getattr(state, field), getattr(ref_state, field), atol=1e-5)
    # Gradient norms catch a scale error that Adam's normalisation would hide in the params.
    for got, want in zip(history, ref_history, strict=True):
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, err_msg=k)


@pytest.fixture(scope="module", params=["dcgan", "mlp"])
def reference(request):
    cfg = tiny_config(request.param)
    batches = make_batches(cfg)
    driver, state, history = run_steps(cfg, "shard_map", 1, batches)
    return cfg, batches, driver.get_state(state), history


@pytest.mark.parametrize("driver_name", ["shard_map", "pmap"])
def test_eight_devices_match_one_device(reference, driver_name):
    cfg, batches, ref_state, ref_history = reference
    driver, state, history = run_steps(cfg, driver_name, 8, batches)
    assert driver.num_devices == 8
    host = driver.get_state(state)
    assert int(host.step) == STEPS
    assert_gan_runs_match(host, ref_state, history, ref_history)
    if driver_name == "pmap":  # every replica holds the same state
        for leaf in jax.tree.leaves(state.g_params):
            leaf = np.asarray(leaf)
            np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))


def test_training_changes_the_params(reference):
    cfg, _, ref_state, _ = reference
    driver, init_fn = build_training(cfg, jax.devices()[:1])
    init = driver.get_state(driver.init_state(init_fn, jax.random.PRNGKey(cfg.seed)))
    delta = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), init.g_params,
                         ref_state.g_params)
    assert max(jax.tree.leaves(delta)) > 1e-4


def test_several_discriminator_steps_per_iteration_match_across_devices():
    cfg = tiny_config("mlp", **{"train.d_steps": "2", "train.g_steps": "2"})
    batches = make_batches(cfg, d_steps=2)
    _, s1, h1 = run_steps(cfg, "shard_map", 1, batches)
    d8, s8, h8 = run_steps(cfg, "shard_map", 8, batches)
    assert_trees_close(d8.get_state(s8).g_params, jax.device_get(s1.g_params), atol=1e-5)
    np.testing.assert_allclose(h8[-1]["d_grad_norm"], h1[-1]["d_grad_norm"], rtol=1e-4)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    with pytest.raises(ParallelError, match="not divisible by the 8 devices"):
        check_batch_divisible(20, 8)
    cfg = tiny_config("mlp", **{"train.batch_size": "12"})
    with pytest.raises(ParallelError, match="multiple of 8"):
        build_training(cfg, jax.devices())


def test_unknown_driver_is_an_error():
    with pytest.raises(ParallelError, match="unknown driver"):
        make_driver("tpu_magic", lambda s, b: (s, b))


def test_step_does_not_retrace():
    cfg = tiny_config("mlp")
    driver, init_fn = build_training(cfg, jax.devices()[:2])
    state = driver.init_state(init_fn, jax.random.PRNGKey(0))
    for batch in make_batches(cfg):
        state, _ = driver.step(state, driver.put_batch(batch))
    assert driver._step._cache_size() == 1


def test_cluster_detection_from_the_environment():
    from genart_jax.parallel import detected_cluster

    assert detected_cluster({}) is None
    assert detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == "slurm"
    assert detected_cluster({"TPU_WORKER_HOSTNAMES": "t1"}) is None
    assert detected_cluster({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}) == "tpu"


def test_coordinator_without_process_counts_is_a_clear_error(monkeypatch):
    from genart_jax.parallel import maybe_initialize_distributed

    monkeypatch.delenv("GENART_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("GENART_PROCESS_ID", raising=False)
    with pytest.raises(ParallelError, match="--num-processes N --process-id I"):
        maybe_initialize_distributed("127.0.0.1:1234")


def test_fused_steps_unroll_on_cpu_for_convolutions_or_with_kept_host_memory(monkeypatch):
    from genart_jax import host_memory
    from genart_jax.parallel import unroll_fused_steps

    assert jax.default_backend() == "cpu"
    for kept in (False, True):
        monkeypatch.setattr(host_memory, "_applied", kept)
        assert unroll_fused_steps(convolutional=True)
        assert unroll_fused_steps(convolutional=False) == kept


# Both layouts of the fused loop (`unroll_fused_steps`): unrolled and rolled.
@pytest.mark.parametrize("driver_name,arch,unroll", [
    ("shard_map", "dcgan", True), ("pmap", "dcgan", True), ("shard_map", "mlp", False),
    ("shard_map", "mlp", True)])
def test_fused_steps_equal_single_steps(driver_name, arch, unroll, monkeypatch):
    import genart_jax.train.gan as gan

    monkeypatch.setattr(gan, "unroll_fused_steps", lambda convolutional: unroll)
    from genart_jax.config import apply_overrides

    cfg = apply_overrides(tiny_config(arch), {"train.driver": driver_name})
    batches = make_batches(cfg)
    single, init_fn = build_training(cfg, jax.devices()[:4])
    state = single.init_state(init_fn, jax.random.PRNGKey(0))
    for b in batches:
        state, metrics = single.step(state, single.put_batch(b))
    fused, _ = build_training(cfg, jax.devices()[:4], steps_per_call=STEPS)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    fstate, fmetrics = fused.step(fused.init_state(init_fn, jax.random.PRNGKey(0)),
                                  fused.put_batch(stacked))
    assert int(fused.get_state(fstate).step) == STEPS
    assert_trees_close(fused.get_state(fstate).g_params, single.get_state(state).g_params,
                       atol=1e-5)
    assert fused.get_metrics(fmetrics)["g_loss"] == pytest.approx(
        single.get_metrics(metrics)["g_loss"], rel=1e-5)
