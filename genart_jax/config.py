"""Configs: one schema with defaults, python recipe files, and validated `KEY=VALUE` overrides.

A recipe module in `genart_jax/configs/` (or a user's own file) defines `get_config()` that
starts from `base_config()`, or from another recipe through `recipe(NAME)`, and sets values.
Every config that reaches training is checked against the schema: an unknown key or a value of
the wrong type is a `ConfigError` that names the key and the closest valid one.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.resources
import importlib.util
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

RECIPES_PACKAGE = "genart_jax.configs"
DEFAULT_CONFIG = "dcgan_digits"


class ConfigError(ValueError):
    """A config the user wrote (file, override or saved JSON) that cannot be used as given."""


def base_config() -> ml_collections.ConfigDict:
    """The full schema with defaults; recipes change values, never add keys."""
    from genart_jax.models.registry import architectures  # each registers its section

    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.family = "gan"  # "gan" | "vae"
    c.model.arch = "dcgan"  # an architecture of the family, in models.registry
    c.model.latent_dim = 100
    c.model.num_classes = 0  # > 0: conditional model (label in), themes at sampling time
    c.model.dtype = "float32"  # compute dtype: "float32" | "bfloat16"; params stay float32
    # DCGAN's and the conv VAE's k4/s2 convolutions: "auto" (each pass in the form fastest on its
    # platform: docs/cpu_convolutions.md) | "xla" (XLA's own form of every pass everywhere)
    c.model.conv_forms = "auto"
    for arch in architectures():  # model.<section>: settings only that architecture reads
        c.model[arch.section] = ml_collections.ConfigDict(dict(arch.defaults))

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # "digits" (embedded) or a prepared TFDS name
    c.data.split = "train"
    c.data.data_dir = ""  # "" -> $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.image_size = 32
    c.data.channels = 1
    c.data.cache = True  # keep the preprocessed split in host memory (small datasets)
    c.data.prefetch = 2  # batches prepared ahead on a background thread (and per worker)
    # streaming reader processes: a count, 0 (read on the prefetch thread) or "auto" (none on
    # 1-2 cores, else half the cores, at most 16: data.pipeline.auto_workers); none when cached
    c.data.workers = ml_collections.FieldReference("auto", field_type=object)
    # keep the whole (cached) split on the devices, gather there: "auto" | "true" | "false";
    # auto: when it takes at most on_device_fraction of the smallest device's memory (not on CPU)
    # (typed `object`, so a recipe written when it was a bool, `= True`, still loads; validate
    # turns True/False into "true"/"false")
    c.data.on_device = ml_collections.FieldReference("auto", field_type=object)
    c.data.on_device_fraction = 0.25

    c.train = ml_collections.ConfigDict()
    c.train.steps = 2000
    c.train.batch_size = 64  # global, over all devices of all processes
    c.train.d_steps = 1
    c.train.g_steps = 1
    c.train.g_loss = "non_saturating"  # "non_saturating" | "saturating"
    c.train.gan_loss = "minimax"  # in losses.GAN_LOSSES: minimax (then g_loss), relativistic, hinge
    c.train.r1_gamma = 0.0  # weight of the R1 penalty (D's input gradient on real data)
    c.train.r2_gamma = 0.0  # weight of the R2 penalty (on generated data)
    c.train.penalty_every = 1  # lazy R1/R2: every N iterations, weighted by N
    c.train.driver = "shard_map"  # "shard_map" (jit over shard_map) | "pmap"
    c.train.log_every = 50
    c.train.sample_every = 500
    c.train.ema_halflife_kimg = 10.0  # generator EMA half-life in thousands of images
    c.train.ema_rampup = 0.05  # half-life at most this fraction of images seen; 0 = off
    c.train.nonfinite = "stop"  # on a NaN/Inf loss or gradient: "stop" or "skip" the update
    c.train.steps_per_call = 0  # steps fused into one compiled call; 0 = per backend (loop.py)
    # TensorBoard event files in WORKDIR/tensorboard/ (process 0; needs tensorboardX, else off)
    c.train.tensorboard = True

    c.augment = ml_collections.ConfigDict()
    c.augment.flip = False  # GAN: random horizontal flips of real images
    c.augment.diffaugment = ""  # GAN: e.g. "color,translation,cutout" on real and fake for D
    c.augment.ada = ""  # GAN: "" off | "adaptive" (p steered by sign(D(real))) | "fixed" p
    c.augment.ada_p = 0.0  # ADA: initial (adaptive) or constant (fixed) probability
    c.augment.ada_target = 0.6  # ADA: target of r_t = E[sign(D(augmented real))]
    c.augment.ada_kimg = 500.0  # ADA: thousands of images for p to move by 1
    c.augment.ada_p_max = 0.8  # ADA: p stays below this, where augmentations do not leak

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000  # 0 = only at the end (and on preemption)
    c.checkpoint.every_minutes = 10.0  # also save when this much time passed; 0 = off
    c.checkpoint.keep = 3  # keep the latest K checkpoints
    c.checkpoint.async_save = True  # write in the background while training goes on

    c.vae = ml_collections.ConfigDict()
    c.vae.likelihood = "bernoulli"  # "bernoulli" (pixels as probabilities) | "gaussian"
    c.vae.binarize = True  # bernoulli: sample binary pixels each step (eval: fixed seed)
    c.vae.scale = "learned"  # gaussian: "learned" per-pixel or "fixed" standard deviation
    c.vae.fixed_scale = 0.1  # gaussian, fixed: the standard deviation (data in [-1, 1])
    c.vae.discretized = True  # gaussian: mass of the 8-bit bin (True) or density (False)
    c.vae.beta = 1.0  # weight of the KL term (1: the ELBO itself)
    c.vae.kl_warmup_steps = 0  # KL weight ramps 0 -> beta over this many steps
    c.vae.eval_samples = 100  # K of the importance-weighted bound in `genart eval`
    c.vae.eval_split = "test"

    # the hierarchical VAE (model.arch="hvae"): its optimizer and step, as VDVAE trains
    c.hvae = ml_collections.ConfigDict()
    c.hvae.optimizer = "adamw"  # "adamw" | "adamax"
    c.hvae.learning_rate = 2e-4
    c.hvae.warmup_steps = 100  # linear warm-up, counted in applied updates
    c.hvae.b1 = 0.9
    c.hvae.b2 = 0.9
    c.hvae.eps = 1e-8
    c.hvae.weight_decay = 0.01  # decoupled, scaled by the learning rate
    c.hvae.grad_clip = 200.0  # global gradient norm clipped to this (0: off)
    c.hvae.skip_threshold = 400.0  # updates with a gradient norm >= this are skipped (0: never)
    c.hvae.ema_rate = 0.9999  # EMA of the weights (sampling and eval use it; sample.use_ema)
    c.hvae.ema_warmup = 10  # EMA rate at update t: min(ema_rate, (1+t)/(ema_warmup+t)); 0: off
    # sampling temperature: one value, or one per latent group (top group first)
    c.hvae.temperature = (1.0,)
    # pixels of samples and grids: "greedy" (the most probable mixture component's centre, as
    # the conv VAE shows decoder means) | "sample" (drawn from the DMoL, as VDVAE shows them)
    c.hvae.pixels = "greedy"
    c.hvae.eval_split = "test"

    c.g_optimizer = _optimizer_defaults()  # GAN generator
    c.d_optimizer = _optimizer_defaults()  # GAN discriminator
    c.optimizer = _optimizer_defaults()  # single-network families (VAE)
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.9

    c.sample = ml_collections.ConfigDict()
    c.sample.num = 64
    c.sample.seed = 0
    c.sample.use_ema = True
    return c


def _optimizer_defaults() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.name = "adam"  # "adam" | "rmsprop"
    o.learning_rate = 2e-4
    o.b1 = 0.5  # adam
    o.b2 = 0.999  # adam
    o.decay = 0.9  # rmsprop
    o.eps = 1e-8
    return o


# ---------------------------------------------------------------------------------------------
# flattening and validation


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": value}."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping | ml_collections.ConfigDict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def renamed_keys() -> dict[str, str]:
    """Keys of older versions -> their place now (an architecture's settings moved from flat
    `model.*` keys into its own section, `model.<section>.*`)."""
    from genart_jax.models.registry import architectures

    return {f"model.{old}": f"model.{a.section}.{new}" for a in architectures()
            for old, new in a.renamed.items()}


def _unknown_key(key: str, valid: Iterable[str]) -> str:
    """The error for a key not in the schema: where a renamed key went, else the closest valid
    key (by its last component first, which catches a right name in a wrong section)."""
    moved = renamed_keys().get(key)
    if moved:
        return f"config key '{key}' is now '{moved}'"
    valid = list(valid)
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = [v for v in valid if v.rsplit(".", 1)[-1] == leaf]
    best = by_leaf[0] if by_leaf else (match[0] if match else "")
    return f"unknown config key '{key}'" + (f" (closest valid key: '{best}')" if best else "")


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return isinstance(value, type(default))


def _legacy_value(key: str, value: Any) -> Any:
    """data.on_device was a bool before "auto": saved configs and recipes with True/False (and
    overrides spelled True/False) keep their meaning. data.workers is a count or "auto": a
    count given as text ("2", an override) becomes the int."""
    if key == "data.workers" and isinstance(value, str):
        text = value.strip().lower()
        try:
            return text if text == "auto" else int(text)
        except ValueError:
            return value
    if key == "data.on_device":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value.strip().lower()
    return value


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check keys and types against `base_config()`; return a locked copy with floats as floats."""
    schema = flatten(base_config())
    flat = {k: _legacy_value(k, v) for k, v in flatten(cfg).items()}
    for key, value in flat.items():
        if key not in schema:
            raise ConfigError(_unknown_key(key, schema))
        if key == "data.workers":  # a count or "auto"
            if value != "auto" and not _type_ok(0, value):
                raise ConfigError(f"config key 'data.workers' must be a count or 'auto', got "
                                  f"{value!r}")
        elif not _type_ok(schema[key], value):
            raise ConfigError(
                f"config key '{key}' must be {type(schema[key]).__name__}, "
                f"got {value!r} ({type(value).__name__})"
            )
    full = base_config()
    for key, value in flat.items():
        if isinstance(schema[key], float):
            value = float(value)
        if isinstance(schema[key], tuple):
            value = tuple(value)
        _set(full, key, value)
    _check_values(full)
    full.lock()
    return full


def _set(cfg: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    with node.unlocked():
        if dotted == "data.workers" and leaf in node:  # a count or "auto": either may replace
            del node[leaf]  # the other (a copy made by to_dict() typed the field by its value)
        node[leaf] = value


# The compute dtypes a model can run in (`model.dtype`) and `genart bench --dtypes` times.
DTYPES = ("float32", "bfloat16")

_CHOICES = {
    "vae.likelihood": ("bernoulli", "gaussian"),
    "vae.scale": ("learned", "fixed"),
    "hvae.optimizer": ("adamw", "adamax"),
    "hvae.pixels": ("greedy", "sample"),
    "optimizer.name": ("adam", "rmsprop"),
    "model.dtype": DTYPES,
    "model.conv_forms": ("auto", "xla"),  # resample_conv.FORMS
    "train.g_loss": ("non_saturating", "saturating"),
    "augment.ada": ("", "adaptive", "fixed"),
    "train.driver": ("shard_map", "pmap"),
    "train.nonfinite": ("stop", "skip"),
    "g_optimizer.name": ("adam", "rmsprop"),
    "d_optimizer.name": ("adam", "rmsprop"),
    "data.on_device": ("auto", "true", "false"),
}

_POSITIVE = (
    "model.latent_dim", "data.image_size", "data.channels",
    "train.batch_size", "train.d_steps", "train.g_steps", "train.log_every", "sample.num",
    "checkpoint.keep", "vae.fixed_scale", "vae.eval_samples",
    "train.penalty_every", "augment.ada_kimg",
)


def _check_values(cfg: ml_collections.ConfigDict) -> None:
    from genart_jax.losses import GAN_LOSSES  # the registries: each objective and
    from genart_jax.models import registry  # architecture once, by name

    flat = flatten(cfg)
    choices = {"model.family": registry.families(), "model.arch": registry.names(), **_CHOICES}
    for key, valid in choices.items():
        if flat[key] not in valid:
            raise ConfigError(f"config key '{key}' is {flat[key]!r}; choose one of {valid}")
    if flat["train.gan_loss"] not in GAN_LOSSES:
        raise ConfigError(f"config key 'train.gan_loss' is {flat['train.gan_loss']!r}; choose one "
                          f"of {tuple(GAN_LOSSES)}")
    positive = _POSITIVE + tuple(f"model.{a.section}.{k}" for a in registry.architectures()
                                 for k in a.positive)
    for key in positive:
        if flat[key] <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {flat[key]}")
    try:
        arch = registry.architecture_of(cfg)
        if arch.check is not None:
            arch.check(arch.settings(cfg.model), cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if flat["data.on_device"] == "true" and not (flat["data.cache"] and flat["train.driver"]
                                                 == "shard_map"):
        raise ConfigError("data.on_device=true needs data.cache=true and "
                          "train.driver=shard_map")
    if not 0 < flat["data.on_device_fraction"] <= 1:
        raise ConfigError(f"config key 'data.on_device_fraction' must be in (0, 1], got "
                          f"{flat['data.on_device_fraction']}")
    from genart_jax.augment import parse_policy

    try:
        parse_policy(flat["augment.diffaugment"])
    except ValueError as e:
        raise ConfigError(f"config key 'augment.diffaugment': {e}") from e
    workers = 0 if flat["data.workers"] == "auto" else flat["data.workers"]
    if workers < 0 or flat["data.prefetch"] < 0:
        raise ConfigError(f"data.workers and data.prefetch must be >= 0, got "
                          f"{flat['data.workers']}, {flat['data.prefetch']}")
    for key in ("model.num_classes", "vae.kl_warmup_steps", "vae.beta"):
        if flat[key] < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {flat[key]}")
    for key in ("hvae.learning_rate", "hvae.eps", "hvae.weight_decay", "hvae.grad_clip",
                "hvae.skip_threshold", "hvae.warmup_steps", "hvae.ema_warmup"):
        if flat[key] < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {flat[key]}")
    for key in ("hvae.b1", "hvae.b2", "hvae.ema_rate"):
        if not 0.0 <= flat[key] < 1.0:
            raise ConfigError(f"config key '{key}' must be in [0, 1), got {flat[key]}")
    temps = flat["hvae.temperature"]
    if not temps or any(not isinstance(t, int | float) or t < 0 for t in temps):
        raise ConfigError(f"config key 'hvae.temperature' must be one or more temperatures "
                          f">= 0, got {temps!r}")
    for key in ("train.r1_gamma", "train.r2_gamma"):
        if flat[key] < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {flat[key]}")
    for key in ("augment.ada_p", "augment.ada_target", "augment.ada_p_max"):
        if not 0.0 <= flat[key] <= 1.0:
            raise ConfigError(f"config key '{key}' must be in [0, 1], got {flat[key]}")
    for key in ("train.steps", "train.sample_every", "checkpoint.every_steps",
                "checkpoint.every_minutes", "train.steps_per_call"):
        if flat[key] < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {flat[key]}")


# ---------------------------------------------------------------------------------------------
# files and overrides


def recipe_names() -> list[str]:
    """The recipes shipped in the package (`genart_jax/configs/*.py`), sorted."""
    files = importlib.resources.files(RECIPES_PACKAGE).iterdir()
    return sorted(f.name[:-3] for f in files
                  if f.name.endswith(".py") and not f.name.startswith("_"))


def recipe(name_or_path: str | None = None) -> ml_collections.ConfigDict:
    """A recipe's `get_config()` (a shipped recipe's name, or a path to a .py file), unvalidated
    and unlocked: what one recipe builds on another with (`c = recipe("dcgan_digits");
    c.model.num_classes = 10`)."""
    name_or_path = name_or_path or DEFAULT_CONFIG
    path = Path(name_or_path)
    if path.suffix == ".py" and path.is_file():
        spec = importlib.util.spec_from_file_location(f"genart_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        where = str(path)
    elif path.stem in recipe_names():
        # `configs/dcgan_digits.py` (the old place) still names the shipped recipe
        module = importlib.import_module(f"{RECIPES_PACKAGE}.{path.stem}")
        where = f"recipe '{path.stem}'"
    else:
        raise ConfigError(
            f"config '{name_or_path}' not found: give a path to a .py file with get_config(), "
            f"or one of {recipe_names()}"
        )
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{where} defines no get_config()")
    return module.get_config()


def load_config(name_or_path: str | None = None,
                overrides: Mapping[str, str] | None = None) -> ml_collections.ConfigDict:
    """Load a recipe file, apply string overrides, validate and lock."""
    cfg = validate(recipe(name_or_path))
    return apply_overrides(cfg, overrides or {})


def parse_value(key: str, text: str, default: Any) -> Any:
    """Parse an override string by the type of the key's current value."""
    if key == "data.workers":  # a count or "auto", either way round (validate decides)
        return text
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple | list):
            value = ast.literal_eval(text)
            return tuple(value) if isinstance(value, tuple | list) else (value,)
        return text
    except (ValueError, SyntaxError) as e:
        raise ConfigError(
            f"override {key}={text!r}: expected {type(default).__name__}"
        ) from e


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Mapping[str, str]) -> ml_collections.ConfigDict:
    """Return a validated copy of `cfg` with `{"train.steps": "100"}`-style overrides applied."""
    flat = flatten(cfg)
    new = ml_collections.ConfigDict(cfg.to_dict())
    for key, text in overrides.items():
        if key not in flat:
            raise ConfigError(_unknown_key(key, flat))
        _set(new, key, parse_value(key, text, flat[key]))
    return validate(new)


def to_json(cfg: ml_collections.ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
    """A config saved with `to_json`, validated: see `from_dict`."""
    return from_dict(json.loads(text))


def from_dict(raw: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A config saved by this or an older version (a run's config.json, a checkpoint's or an
    export's), validated: lists become tuples again, and keys renamed since (`renamed_keys`)
    are read at their new place, so a saved run stays usable."""
    schema, moved = flatten(base_config()), renamed_keys()
    nested: dict[str, Any] = {}
    for key, value in flatten(raw).items():
        key = moved.get(key, key)
        if isinstance(value, list) and isinstance(schema.get(key), tuple):
            value = tuple(value)
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate(ml_collections.ConfigDict(nested))
