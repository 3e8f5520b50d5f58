"""Test setup: 8 simulated CPU devices (before JAX starts), a private TFDS data dir, tiny
configs that compile fast."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")  # also for started processes
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
# One persistent compilation cache for the session and the processes its tests start: the same
# tiny programs are compiled by many tests and by every restart of a killed run, and XLA keys
# an entry by the program, its options and XLA_FLAGS, so only equal programs share one. A
# fresh folder per session (no entry outlives the run); GENART_TEST_COMPILE_CACHE=0 turns it off.
if os.environ.get("GENART_TEST_COMPILE_CACHE", "1") != "0":
    import atexit  # noqa: E402
    import shutil  # noqa: E402
    import tempfile  # noqa: E402

    _compile_cache = tempfile.mkdtemp(prefix="genart-test-xla-cache-")
    atexit.register(shutil.rmtree, _compile_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _compile_cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from genart_jax.config import load_config  # noqa: E402

# Flax's BatchNorm mixes bfloat16 and float32 internally, so strict dtype promotion (as in
# equinox's tests) cannot be switched on here; rank promotion can.
jax.config.update("jax_numpy_rank_promotion", "raise")
# As in the Flax examples' tests: XLA optimisations off (set above, before JAX starts, so the
# processes that tests start inherit it); compiles are several times faster.
# Start the backends now, so that XLA_FLAGS is read once, as set above: the CLI's switch to
# Eigen convolutions (`genart_jax.cpu_convolutions`) changes nothing in this process whichever
# test calls the CLI first; processes that tests start apply it as the CLI does.
jax.devices()


@pytest.fixture(scope="session", autouse=True)
def tfds_data_dir(tmp_path_factory):
    """All tests (and the processes they start) read and prepare data in a private folder."""
    path = tmp_path_factory.mktemp("tfds")
    old = os.environ.get("TFDS_DATA_DIR")
    os.environ["TFDS_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TFDS_DATA_DIR", None)
    else:
        os.environ["TFDS_DATA_DIR"] = old


TINY_DCGAN = {"model.dcgan.g_width": "8", "model.dcgan.d_width": "8", "model.latent_dim": "16",
              "data.image_size": "16", "train.batch_size": "16"}
TINY_MLP = {"model.mlp_gan.g_hidden": "(32, 64)", "model.mlp_gan.d_hidden": "(64, 32)",
            "model.latent_dim": "16", "train.batch_size": "16"}


def tiny_config(arch: str = "dcgan", **overrides: str):
    """A small config of the named architecture (dcgan or mlp) with string overrides."""
    base = "dcgan_digits" if arch == "dcgan" else "gan_mlp_digits"
    tiny = TINY_DCGAN if arch == "dcgan" else TINY_MLP
    return load_config(base, {**tiny, **overrides})
