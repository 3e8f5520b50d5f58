"""A small CNN classifier trained by the package on a labelled dataset, whose penultimate layer
is the feature space of the quality metrics (FID, KID, precision/recall); and user-supplied
Flax feature extractors behind the same interface.

No network access and no pretrained weights are needed: `genart train-classifier` trains one
in about a minute on a CPU for the digits. Saved as Orbax params plus `classifier.json`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genart_jax.small_train import fit, gradient_update, shuffled_batches

PyTree = Any
FORMAT = "genart_jax.classifier.v1"
META_FILE = "classifier.json"
PARAMS_DIR = "params"
EVAL_BATCH = 256


class ClassifierError(ValueError):
    """A classifier or extractor that cannot be used as asked: missing, not one, wrong shape."""


class CNN(nn.Module):
    """Stride-2 conv stages from `image_size` (any square size >= 8) down to 4x4 or less, a
    dense feature layer, logits.

    `features(x)` is the post-ReLU penultimate activation (`feature_dim` wide)."""

    num_classes: int
    image_size: int
    width: int = 16
    feature_dim: int = 128

    def setup(self):
        if self.image_size < 8:
            raise ClassifierError(f"the classifier needs images of at least 8x8 pixels, got "
                                  f"{self.image_size}")
        k = math.ceil(math.log2(self.image_size / 4))  # 'SAME' stride 2: 28 -> 14 -> 7 -> 4
        widths = [min(self.width * 2 ** i, 8 * self.width) for i in range(int(k))]
        self.convs = [nn.Conv(w, (3, 3), name=f"conv{i}") for i, w in enumerate(widths)]
        self.downs = [nn.Conv(w, (3, 3), strides=(2, 2), name=f"down{i}")
                      for i, w in enumerate(widths)]
        self.feature = nn.Dense(self.feature_dim)
        self.head = nn.Dense(self.num_classes)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        for conv, down in zip(self.convs, self.downs, strict=True):
            x = nn.relu(down(nn.relu(conv(x))))
        return nn.relu(self.feature(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.head(self.features(x))


def fingerprint(params: PyTree) -> str:
    """A short SHA-256 of a network's params: equal only for the same feature space."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()[:16]


def _local_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over this process's devices, on which feature batches are split."""
    return jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))


def replicated(tree: PyTree) -> PyTree:
    """`tree` on every local device (the feature networks' params)."""
    return jax.device_put(tree, jax.sharding.NamedSharding(_local_mesh(), jax.P()))


def _batched(fn, images: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """fn over `images` in fixed-size batches (the last padded), so one compile serves all;
    each batch (rounded up to a multiple of the local device count) is split over the local
    devices, and only one batch of images is on the devices at a time."""
    n, ndev = len(images), jax.local_device_count()
    batch = -(-min(batch, n) // ndev) * ndev
    sharding = jax.sharding.NamedSharding(_local_mesh(), jax.P("data"))
    out = []
    for i in range(0, n, batch):
        chunk = images[i:i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(fn(jax.device_put(chunk, sharding)))[:len(chunk) - pad])
    return np.concatenate(out).astype(np.float32)


class Classifier:
    """A trained classifier: `.features(images)` (N, F) and `.probabilities(images)` (N, K) for
    images (N, S, S, C) in [-1, 1], as the data pipeline makes them."""

    def __init__(self, module: CNN, params: PyTree, meta: dict[str, Any]):
        self.module, self.params, self.meta = module, replicated(params), meta
        self.name = f"{meta['dataset']} classifier"
        self.fingerprint = fingerprint(params)
        self.image_shape = (meta["image_size"], meta["image_size"], meta["channels"])
        self._features = jax.jit(lambda p, x: module.apply({"params": p}, x,
                                                           method=CNN.features))
        self._probs = jax.jit(lambda p, x: jax.nn.softmax(module.apply({"params": p}, x)))

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ClassifierError(f"the {self.name} takes images of shape (N, "
                                  f"{', '.join(map(str, self.image_shape))}), got "
                                  f"{images.shape}")
        return images

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer activations (N, feature_dim)."""
        return _batched(functools.partial(self._features, self.params), self._check(images))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, num_classes)."""
        return _batched(functools.partial(self._probs, self.params), self._check(images))


class Extractor:
    """A user-supplied Flax module as a feature extractor: `module.apply({'params': p}, x)`
    returns (N, ...) features, flattened to (N, F). Features only: it has no classes."""

    def __init__(self, module: nn.Module, params: PyTree, name: str,
                 batch: int = EVAL_BATCH):
        self.module, self.params, self.name = module, replicated(params), name
        self.batch = batch
        self.fingerprint = fingerprint(params)
        self._features = jax.jit(lambda p, x: module.apply({"params": p}, x))

    def features(self, images: np.ndarray) -> np.ndarray:
        """Module outputs (N, F) for images (N, S, S, C) in [-1, 1]."""
        images = np.asarray(images, np.float32)
        try:
            out = _batched(functools.partial(self._features, self.params), images,
                           self.batch)
        except Exception as e:  # anything the user's module raises (shapes, param names)
            raise ClassifierError(f"the extractor {self.name} failed on images of shape "
                                  f"{images.shape}: {e}") from e
        return out.reshape(len(out), -1)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        raise ClassifierError(f"{self.name} is a feature extractor without class outputs")


def _xent_step(module: CNN, tx: optax.GradientTransformation):
    """((params, opt_state), (images, labels)) -> (state, mean cross-entropy): `fit`'s step."""
    @jax.jit
    def step(state, batch):
        x, y = batch

        def loss_fn(p):
            logits = module.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        params, opt_state, loss = gradient_update(loss_fn, tx, *state)
        return (params, opt_state), loss
    return step


def _augment(rng: np.random.Generator, x: np.ndarray, max_shift: int) -> np.ndarray:
    """Random translations by up to `max_shift` pixels (edge padding): cheap, label-preserving."""
    if max_shift <= 0:
        return x
    n, s = x.shape[0], x.shape[1]
    padded = np.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                    mode="edge")
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    return np.stack([padded[i, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(n)])


def _labels_or_error(labels: np.ndarray, name: str, split: str) -> None:
    if len(labels) == 0 or labels.min() < 0:
        raise ClassifierError(f"dataset '{name}' split '{split}' has no labels; a classifier "
                              f"needs a labelled dataset (use --extractor for your own "
                              f"feature extractor instead)")


def accuracy(clf: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of `images` whose most probable class is the label."""
    return float((clf.probabilities(images).argmax(-1) == labels).mean())


def train_classifier(data_cfg: Any, out_dir: str | Path, *, steps: int = 500,
                     batch_size: int = 64, seed: int = 0, width: int = 16,
                     feature_dim: int = 128, learning_rate: float = 1e-3,
                     max_shift: int = 2, test_split: str = "test", progress: bool = True
                     ) -> dict[str, Any]:
    """Train a `CNN` on the labels of `data_cfg.split`, measure accuracy on `test_split`, and
    save params (Orbax) and `classifier.json` into `out_dir`. Returns the saved meta."""
    from genart_jax.data import read_split

    if steps <= 0 or batch_size <= 0:
        raise ClassifierError(f"steps and batch size must be positive, got {steps}, "
                              f"{batch_size}")
    t0 = time.perf_counter()
    train_split = data_cfg.split
    x_train, y_train = read_split(data_cfg, train_split)
    x_test, y_test = read_split(data_cfg, test_split)
    _labels_or_error(y_train, data_cfg.name, train_split)
    _labels_or_error(y_test, data_cfg.name, test_split)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    module = CNN(num_classes=num_classes, image_size=data_cfg.image_size, width=width,
                 feature_dim=feature_dim)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *x_train.shape[1:])))["params"]
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=1e-4)
    rng = np.random.default_rng(seed)  # the batches, then each batch's shifts
    batches = ((jnp.asarray(_augment(rng, x_train[idx], max_shift)), jnp.asarray(y_train[idx]))
               for idx in shuffled_batches(rng, len(x_train), batch_size))
    (params, _), _ = fit(_xent_step(module, tx), (params, tx.init(params)), batches, steps,
                         progress=progress, desc="classifier")
    meta = {"format": FORMAT, "dataset": data_cfg.name, "train_split": train_split,
            "test_split": test_split, "image_size": int(data_cfg.image_size),
            "channels": int(data_cfg.channels), "num_classes": num_classes,
            "width": width, "feature_dim": feature_dim, "steps": steps,
            "batch_size": batch_size, "seed": seed, "learning_rate": learning_rate,
            "max_shift": max_shift, "train_examples": int(len(x_train)),
            "test_examples": int(len(x_test))}
    clf = Classifier(module, params, meta)
    meta["train_accuracy"] = accuracy(clf, x_train, y_train)
    meta["test_accuracy"] = accuracy(clf, x_test, y_test)
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    save_classifier(out_dir, params, meta)
    return meta


def save_classifier(out_dir: str | Path, params: PyTree, meta: dict[str, Any],
                    meta_file: str = META_FILE) -> Path:
    """Write params (Orbax, under out_dir/params) and meta (out_dir/`meta_file`)."""
    import orbax.checkpoint as ocp

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out / PARAMS_DIR, jax.tree.map(np.asarray, params), force=True)
        ckptr.wait_until_finished()
    (out / meta_file).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def default_dir(data: str, image_size: int) -> Path:
    """Where `genart train-classifier` saves, and `genart eval` looks, by default."""
    return Path("runs") / f"classifier_{data}_{image_size}"


def train_command(data: str, image_size: int, channels: int) -> str:
    """The command that trains the default classifier for a dataset at a size."""
    return (f"genart train-classifier --data {data} --image-size {image_size} --channels "
            f"{channels} --out {default_dir(data, image_size)}")


def matching_classifier(data_cfg: Any, path: str | Path | None = None, *,
                        purpose: str = "", alternative: str = "") -> Classifier:
    """The classifier in `path` (default: `default_dir` of the dataset and size), checked to
    take the images of `data_cfg`; a missing one is a ClassifierError that gives the command
    training it. `purpose` (e.g. " for the metrics' features") and `alternative` (e.g.
    ", or give your own with --extractor") complete the message."""
    how = train_command(data_cfg.name, data_cfg.image_size, data_cfg.channels)
    path = Path(path) if path else default_dir(data_cfg.name, data_cfg.image_size)
    if not (path / META_FILE).is_file():
        raise ClassifierError(f"no classifier in {path}{purpose}; train one with `{how}` "
                              f"(then pass --classifier {path} if you chose another "
                              f"--out){alternative}")
    clf = load_classifier(path)
    want = (data_cfg.name, data_cfg.image_size, data_cfg.channels)
    have = (clf.meta["dataset"], clf.meta["image_size"], clf.meta["channels"])
    if want != have:
        raise ClassifierError(f"the classifier in {path} was trained on {have[0]} at "
                              f"{have[1]}x{have[1]}x{have[2]}, but these images are {want[0]} "
                              f"at {want[1]}x{want[1]}x{want[2]}; train a matching one with "
                              f"`{how}`")
    return clf


def load_classifier(path: str | Path) -> Classifier:
    """The classifier saved by `train_classifier` in folder `path`."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        hint = "train one with `genart train-classifier --data NAME --image-size S --out DIR`"
        if not path.exists():
            raise ClassifierError(f"no classifier at {path}: {hint}")
        raise ClassifierError(f"{path} is not a genart_jax classifier (no {META_FILE}); {hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ClassifierError(f"{meta_file} is not valid JSON: {e}") from e
    if meta.get("format") != FORMAT:
        raise ClassifierError(f"{meta_file} is not a {FORMAT} file")
    return Classifier(*restore_cnn(path, meta), meta)


def restore_cnn(path: Path, meta: dict[str, Any]) -> tuple[CNN, PyTree]:
    """The `CNN` described by `meta` and its Orbax params from path/params."""
    import orbax.checkpoint as ocp

    module = CNN(num_classes=meta["num_classes"], image_size=meta["image_size"],
                 width=meta["width"], feature_dim=meta["feature_dim"])
    shape = (1, meta["image_size"], meta["image_size"], meta["channels"])
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                  jnp.zeros(shape))["params"])
    target = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore((path / PARAMS_DIR).resolve(), target)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ClassifierError(f"cannot read the params in {path / PARAMS_DIR}: {e}") from e
    return module, params


def load_extractor(module_spec: str, params_path: str | Path,
                   kwargs_path: str | Path | None = None) -> Extractor:
    """A user's Flax module "package.module:ClassName" (constructed with the JSON object in
    `kwargs_path`, or no arguments) with params from a flax.serialization msgpack file (the
    params tree, or {"params": tree})."""
    mod_name, sep, cls_name = module_spec.partition(":")
    if not sep or not mod_name or not cls_name:
        raise ClassifierError(f"--extractor must be package.module:ClassName, got "
                              f"{module_spec!r}")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ClassifierError(f"cannot import {module_spec}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ClassifierError(f"{module_spec} is not a flax.linen Module class")
    kwargs = {}
    if kwargs_path is not None:
        try:
            kwargs = json.loads(Path(kwargs_path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ClassifierError(f"cannot read extractor arguments {kwargs_path}: {e}") from e
        if not isinstance(kwargs, dict):
            raise ClassifierError(f"{kwargs_path} must hold a JSON object of arguments")
    try:
        module = cls(**kwargs)
    except TypeError as e:
        raise ClassifierError(f"cannot construct {module_spec}(**{kwargs}): {e}") from e
    params_path = Path(params_path)
    try:
        tree = flax.serialization.msgpack_restore(params_path.read_bytes())
    except Exception as e:  # missing file, not msgpack
        raise ClassifierError(f"cannot read extractor params {params_path} (a "
                              f"flax.serialization msgpack file): {e}") from e
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    return Extractor(module, tree, f"{module_spec} features")
