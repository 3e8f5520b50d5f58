"""The PyTorch conv-VAE peer of `genart bench` matches genart_jax's conv VAE layer for layer
(parameter counts) and times a step; `run_peers` dispatches each config to its own peer and the
report pairs each peer row with its own config; the hierarchical VAE's peer takes its config's
model and step settings."""

import math

import jax
import numpy as np
import pytest

from genart_jax.bench import harness as bench
from genart_jax.bench.interleave import Timed, time_interleaved
from genart_jax.config import apply_overrides, load_config
from genart_jax.train.vae import build_model


def _genart_params(cfg) -> int:
    model = build_model(cfg)
    s, c = cfg.data.image_size, cfg.data.channels
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, s, s, c), np.float32))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("overrides", [{}, {"data.image_size": "16", "model.latent_dim": "8",
                                            "model.conv_vae.width": "4", "data.channels": "1"}])
def test_torch_vae_has_genart_conv_vae_parameter_count(overrides):
    pytest.importorskip("torch")
    from genart_jax.bench.peers import torch_vae

    cfg = apply_overrides(load_config("bench_convvae32"), overrides)
    _, kwargs = bench.peer_for(cfg)
    model = torch_vae.build(size=kwargs["size"], channels=kwargs["channels"],
                            latent=kwargs["latent"], width=kwargs["width"])
    assert sum(p.numel() for p in model.parameters()) == _genart_params(cfg)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_vae_times_a_step_at_a_tiny_size(dtype):
    pytest.importorskip("torch")
    from genart_jax.bench.peers import torch_vae

    step = torch_vae.make_step(batch=4, size=8, channels=1, latent=4, width=4, dtype=dtype)
    timed = Timed("peer", step)
    time_interleaved([timed], steps=2, rounds=1, pause_s=0)
    t = timed.summary()
    assert t["steps_timed"] == 2 and np.isfinite(t["step_s_median"]) and t["step_s_median"] > 0


def test_torch_dcgan_runs_its_convolutions_in_bfloat16_under_autocast():
    torch = pytest.importorskip("torch")
    from genart_jax.bench.peers import torch_dcgan
    from genart_jax.bench.peers.timing import autocast

    g, d, _, _ = torch_dcgan.build(size=32)
    with autocast("bfloat16"):
        fake = g(torch.randn(2, 100, 1, 1))
        logits = d(fake)
    assert fake.dtype == logits.dtype == torch.bfloat16
    with autocast("float32"):
        assert g(torch.randn(2, 100, 1, 1)).dtype == torch.float32
    with pytest.raises(ValueError, match="float16"):
        autocast("float16")
    step = torch_dcgan.make_step(batch=2, dtype="bfloat16")
    step()  # one D and one G update, parameters stay float32 (autocast casts per op)
    assert all(p.dtype == torch.float32 for p in g.parameters())


def test_peers_run_on_the_gpu_only_beside_a_jax_gpu_run(monkeypatch):
    torch = pytest.importorskip("torch")
    from genart_jax.bench.peers.timing import peer_device, peer_info

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peer_device("cpu") == peer_device("gpu") == "cpu"  # no CUDA for PyTorch: on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert peer_device("gpu") == "cuda" and peer_device("cpu") == peer_device("tpu") == "cpu"
    assert peer_info(False, "bfloat16", "cuda")["device"] == "cuda"


def test_peer_dispatch_by_family():
    assert bench.peer_for(load_config("bench_dcgan32"))[0] == "torch_dcgan"
    assert bench.peer_for(load_config("bench_convvae32"))[0] == "torch_vae"
    assert bench.peer_for(load_config("vae_digits")) is None  # the MLP VAE has no peer
    assert bench.peer_for(load_config("bench_hvae32"))[0] == "hvae"
    assert bench.peer_for(load_config("hvae_cifar32"))[0] == "hvae"


# bench_hvae32 shrunk to a few blocks at 8 px: what the hvae tests time in a second
TINY_HVAE = {"data.image_size": "8", "model.hvae.resolutions": "8,4,1",
             "model.hvae.widths": "8,8,8", "model.hvae.enc_blocks": "1,1,1",
             "model.hvae.dec_blocks": "1,1,1", "model.hvae.zdim": "2",
             "model.hvae.num_mixtures": "2", "train.batch_size": "4"}


def test_hvae_peer_kwargs_map_the_config_and_its_offs():
    pytest.importorskip("torch")
    from genart_jax.bench.peers import hvae as peer
    from genart_jax.models import hvae

    cfg = load_config("bench_hvae32")
    name, kw = bench.peer_for(cfg)
    assert name == "hvae" and peer.MIRRORS == ("vae", "hvae")
    model = {k: kw[k] for k in ("image_size", "channels", *hvae.SETTINGS)}
    assert hvae.count_params(**model) == 1_298_788  # the recipe's docstring
    assert model == {k: getattr(hvae.build(cfg.model.hvae, cfg), k) for k in model}
    assert kw["lr"] == 2e-4 and kw["betas"] == (0.9, 0.9) and kw["weight_decay"] == 0.01
    assert (kw["warmup_iters"], kw["grad_clip"], kw["skip_threshold"], kw["ema_rate"]) == (
        100, 200.0, 400.0, 0.9999)
    off = bench.peer_for(apply_overrides(cfg, {"hvae.grad_clip": "0", "hvae.skip_threshold": "0",
                                               "hvae.ema_rate": "0"}))[1]
    assert (off["grad_clip"], off["skip_threshold"], off["ema_rate"]) == (float("inf"), -1, None)
    # the peer has AdamW only
    assert bench.peer_for(apply_overrides(cfg, {"hvae.optimizer": "adamax"})) is None


def test_hvae_peer_steps_from_the_configs_kwargs():
    torch = pytest.importorskip("torch")
    from genart_jax.bench.peers import hvae as peer
    from genart_jax.train.hvae import build_model

    cfg = apply_overrides(load_config("bench_hvae32"), TINY_HVAE)
    _, kw = bench.peer_for(cfg)
    step = peer.make_step(batch=4, **kw)
    loss, norm, skipped = step()
    assert torch.isfinite(loss) and math.isfinite(norm)
    shapes = jax.eval_shape(lambda: build_model(cfg).init(
        jax.random.key(0), np.zeros((1, 8, 8, 3), np.uint8), key=jax.random.key(0)))
    assert sum(p.numel() for p in step.model.parameters()) == sum(
        int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def test_hvae_peer_is_timed_eager_on_the_cpu_and_compiled_on_the_gpu_only(monkeypatch):
    pytest.importorskip("torch")
    from genart_jax.bench.peers import hvae as peer

    assert peer.COMPILE_ON == ("cuda",)
    cfg = apply_overrides(load_config("bench_hvae32"), TINY_HVAE)
    monkeypatch.setattr(bench, "load_config", lambda name: cfg)
    prepared = bench.prepare_peers("bench_hvae32", None, warmup=1)
    assert [meta["peer"] for _, meta in prepared] == ["pytorch eager"]
    assert prepared[0][1]["batch"] == 4 and prepared[0][1]["device"] == "cpu"


def test_markdown_pairs_each_peer_with_its_own_config():
    def row(config, ips, dtype="float32"):
        return {"config": config, "dtype": dtype, "batch": 128, "devices": 1,
                "driver": "shard_map", "steps_per_call": 1, "images_per_sec": ips,
                "images_per_sec_per_device": ips, "images_per_sec_p90": ips, "compile_s": 1.0,
                "flops_per_step": 1e9, "achieved_flops_per_device": 1e9, "mfu": 0.1}

    report = {"machine": {"backend": "cpu", "device_count": 1, "device_kind": "cpu",
                          "processor": "x", "platform": "x", "versions": {"jax": "0"},
                          "date": "d", "simulated_cpu_devices": False},
              "matmul_peak_flops": {"float32": 1e10},
              "results": [row("a", 100.0), row("a", 900.0, "bfloat16"), row("b", 300.0)],
              "peers": [{"peer": "pytorch eager", "threads": 2, "config": "a", "batch": 128,
                         "dtype": "float32", "images_per_sec": 50.0},
                        {"peer": "pytorch eager", "threads": 2, "config": "a", "batch": 128,
                         "dtype": "bfloat16", "device": "cuda", "images_per_sec": 300.0},
                        # A report from before the bfloat16 peers: its peers ran float32.
                        {"peer": "pytorch eager", "threads": 2, "config": "b", "batch": 128,
                         "images_per_sec": 100.0}]}
    md = bench.markdown(report)
    assert "| pytorch eager (cpu, 2 threads) | float32 | a | 128 | 50 | 2.00x |" in md
    # 900 bfloat16 against 300, a peer that ran on the GPU
    assert "| pytorch eager (cuda) | bfloat16 | a | 128 | 300 | 3.00x |" in md
    assert "| pytorch eager (cpu, 2 threads) | float32 | b | 128 | 100 | 3.00x |" in md
    assert "| 2.00x | - | - | - |" in md  # no MFU in a report from before peers had one
    report["peers"][0].update(mfu=0.05, minor_faults_per_step=3.0, kernel_s_per_step=0.002)
    assert "| 2.00x | 3 | 2 | 5.0% |" in bench.markdown(report)
