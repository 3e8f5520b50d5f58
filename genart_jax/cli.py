"""genart: generative art models in JAX. Each command parses its flags, then calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_STORAGE = 74  # sysexits EX_IOERR: disk full, permission denied or read-only filesystem
USAGE_OVERRIDES = "--config.KEY=VALUE (e.g. --config.train.batch_size=128), repeatable"


def _split_overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """Collect `--config.a.b=v` / `--config.a.b v` pairs; anything else is an error."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            parser.error(f"unrecognized argument {arg!r}; config values are set with "
                         f"{USAGE_OVERRIDES}")
        key = arg[len("--config."):]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(extra):
                parser.error(f"{arg} needs a value")
            i += 1
            value = extra[i]
        out[key] = value
        i += 1
    return out



def _parser() -> argparse.ArgumentParser:
    """The `genart` parser: each subcommand's flags are defined by its `_add_*` function, next
    to its handler (the COMMANDS table below)."""
    p = argparse.ArgumentParser(prog="genart", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return p


def _restore(args):
    """(config, host state, step) of `--workdir`'s checkpoint `--step` (default: the latest)."""
    from genart_jax.train.workdir import restore_workdir

    cfg, state, _, step = restore_workdir(args.workdir, args.step)
    return cfg, state, step


def _add_train(sub) -> None:
    """The flags of `genart train`."""
    t = sub.add_parser("train", help="train a model from a config",
                       epilog=f"Any config value can be set with {USAGE_OVERRIDES}.")
    t.add_argument("--config", default=None,
                   help="a recipe's name (genart_jax/configs/) or a .py file with get_config() "
                        "(default: dcgan_digits)")
    t.add_argument("--workdir", default=None, help="output folder (default: runs/CONFIG_NAME)")
    t.add_argument("--steps", type=int, default=None, help="same as --config.train.steps")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--coordinator", default=None,
                   help="host:port of process 0, for multi-process training outside SLURM/TPU")
    t.add_argument("--num-processes", type=int, default=None)
    t.add_argument("--process-id", type=int, default=None)
    t.add_argument("--no-resume", action="store_true",
                   help="start over even if the workdir has checkpoints (the old run is moved "
                        "to WORKDIR/replaced-TIME/)")


def _train(args, overrides: dict[str, str]) -> int:
    from genart_jax.config import DEFAULT_CONFIG, load_config
    from genart_jax.parallel import maybe_initialize_distributed
    from genart_jax.train import train_and_evaluate

    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    if args.steps is not None:
        overrides = {**overrides, "train.steps": str(args.steps)}
    cfg = _with_prepared_shape(load_config(args.config, overrides), overrides)
    workdir = args.workdir or str(Path("runs") / Path(args.config or DEFAULT_CONFIG).stem)
    try:
        train_and_evaluate(cfg, workdir, progress=not args.no_progress,
                           resume=not args.no_resume)
    except Exception as e:  # a full disk, no permission, read-only: say what is kept
        from genart_jax.checkpoint import describe_intact
        from genart_jax.storage_errors import storage_error

        found = storage_error(e, writing=f"the training run into {workdir}",
                              intact=describe_intact(workdir))
        if found is None:
            raise
        raise found from e
    return 0


def _with_prepared_shape(cfg, overrides: dict[str, str]):
    """`cfg` with data.image_size and data.channels of its prepared dataset (`prepared.json`)
    where the command line did not set them (`data.defaults`), saying so in one line."""
    import jax

    from genart_jax.config import ConfigError, apply_overrides
    from genart_jax.data.defaults import prepared_overrides

    extra = prepared_overrides(cfg.data, overrides)
    if not extra:
        return cfg
    took = " ".join(f"{k}={v}" for k, v in extra.items())
    had = " and ".join(str(cfg.data[k.split(".")[1]]) for k in extra)
    where = f"the prepared.json of '{cfg.data.name}'"
    try:
        new = apply_overrides(cfg, extra)
    except ConfigError as e:
        raise ConfigError(f"{e} ({took} from {where}; the recipe has {had}: take a recipe for "
                          f"that size, or set --config.data.image_size and prepare the folder "
                          f"again at it)") from e
    if jax.process_index() == 0:
        print(f"Data: {took} from {where} (the recipe has {had}; --config.data.image_size / "
              f"--config.data.channels set them otherwise)", flush=True)
    return new


def _add_sample(sub) -> None:
    """The flags of `genart sample`."""
    s = sub.add_parser("sample", help="write a grid of samples from a trained workdir or an "
                                      "exported generator")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="training workdir (latest checkpoint, or --step)")
    src.add_argument("--from-export", help="a .msgpack written by `genart export`")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    s.add_argument("--no-ema", action="store_true",
                   help="use the raw generator weights instead of their moving average")
    s.add_argument("--theme", default=None,
                   help="class(es) of a conditional model: 3, or 1,4,7 for one per column "
                        "(default: every class, column c is class c)")
    s.add_argument("--truncation", type=float, default=None, metavar="PSI",
                   help="GAN: pull latents toward the prior's mean by PSI (1 = off)")
    s.add_argument("--interpolate", action="store_true",
                   help="GAN: rows of slerp between seeded endpoints (--num // --frames rows)")
    s.add_argument("--frames", type=int, default=8, help="with --interpolate: images per row")
    s.add_argument("--direction", default=None, metavar="FILE.npy",
                   help="GAN: add --strength times this latent direction (e.g. from "
                        "`genart feedback --save-direction`)")
    s.add_argument("--strength", type=float, default=1.0)
    s.add_argument("--temperature", default=None, metavar="T[,T...]",
                   help="hvae: the prior's temperature, one value or one per latent group "
                        "(top group first; default: the config's hvae.temperature)")


def _sample(args) -> int:
    from genart_jax import sampling
    from genart_jax.export import load_generator
    from genart_jax.train.families import family_of
    from genart_jax.train.requests import SampleRequest

    if args.from_export:
        cfg, params, stats, meta = load_generator(args.from_export)
        step, weights = meta["step"], "exported"
    else:
        cfg, state, step = _restore(args)
        weights = "raw" if args.no_ema else "EMA"
    try:
        themes = sampling.parse_themes(args.theme, cfg.model.num_classes)
    except ValueError as e:
        raise _UsageError(str(e)) from e
    family = family_of(cfg)
    if not args.from_export:
        params, stats, _ = family.variables(cfg, state, not args.no_ema)
    request = SampleRequest(num=args.num, seed=args.seed, themes=themes, weights=weights,
                            truncation=args.truncation, interpolate=args.interpolate,
                            frames=args.frames, direction=args.direction,
                            strength=args.strength,
                            temperature=_temperatures(args.temperature))
    written = family.sample(cfg, params, stats, request, args.out)
    print(f"Wrote {written.count} samples from step {step} ({written.what}) to "
          f"{written.paths[0]}{written.also}")
    return 0


def _temperatures(text: str | None) -> tuple[float, ...] | None:
    """`--temperature 0.8` or `0.9,0.9,0.7,...` -> a tuple of floats (None when not given)."""
    if text is None:
        return None
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise _UsageError(f"--temperature takes numbers separated by commas, got {text!r}") from e
    if not values or min(values) < 0:
        raise _UsageError(f"--temperature takes one or more values >= 0, got {text!r}")
    return values


def _data_config(name: str, image_size: int | None = None, channels: int | None = None,
                 data_dir: str = ""):
    """The default config's data section with these values (no model to validate against);
    a size or channel count not given (None) is the prepared dataset's (`prepared.json`), or
    the default config's for a dataset without one (the embedded digits, TFDS)."""
    from genart_jax.config import load_config
    from genart_jax.data.defaults import data_shape

    data = load_config(None).data
    image_size, channels = data_shape(name, data_dir, image_size, channels,
                                      default=(data.image_size, data.channels))
    with data.unlocked():
        data.update(name=name, image_size=image_size, channels=channels, data_dir=data_dir)
    return data


def _add_train_classifier(sub) -> None:
    """The flags of `genart train-classifier`."""
    c = sub.add_parser("train-classifier",
                       help="train the CNN whose features the quality metrics use",
                       description="Trains a small CNN on a labelled dataset's train split, "
                                   "reports its held-out accuracy and saves it (Orbax params "
                                   "+ classifier.json) for `genart eval --metrics`.")
    c.add_argument("--data", default="digits", help="dataset name (default: digits)")
    c.add_argument("--image-size", type=int, default=None,
                   help="square size in pixels, as the models you evaluate (default: the prepared "
                        "data's, 32 for digits and TFDS data)")
    c.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="default: the prepared data's, 1 for digits and TFDS data")
    c.add_argument("--data_dir", default="", help="prepared data (default: $TFDS_DATA_DIR or "
                   "~/tensorflow_datasets)")
    c.add_argument("--out", default=None,
                   help="output folder (default: runs/classifier_DATA_SIZE)")
    c.add_argument("--steps", type=int, default=500)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--width", type=int, default=16, help="channels of the first conv stage")
    c.add_argument("--feature-dim", type=int, default=128, help="width of the feature layer")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_classifier(args) -> int:
    from genart_jax.classifier import default_dir, train_classifier

    data_cfg = _data_config(args.data, args.image_size, args.channels, args.data_dir)
    out = Path(args.out) if args.out else default_dir(args.data, data_cfg.image_size)
    meta = train_classifier(data_cfg, out, steps=args.steps, batch_size=args.batch_size,
                            seed=args.seed, width=args.width, feature_dim=args.feature_dim,
                            progress=not args.no_progress)
    print(f"{meta['dataset']} classifier ({meta['image_size']}x{meta['image_size']}x"
          f"{meta['channels']}, {meta['num_classes']} classes, {meta['feature_dim']}-d "
          f"features): {meta['steps']} steps in {meta['seconds']} s; accuracy "
          f"{meta['test_accuracy']:.4f} on {meta['test_split']} ({meta['test_examples']} "
          f"images), {meta['train_accuracy']:.4f} on {meta['train_split']}; saved to {out}")
    return 0


def _add_train_features(sub) -> None:
    """The flags of `genart train-features`."""
    f = sub.add_parser("train-features",
                       help="train the self-supervised (SimCLR) encoder whose features the "
                            "quality metrics use on data without labels",
                       description="Trains a small CNN with SimCLR's contrastive objective on a "
                                   "dataset's train split (no labels needed) and saves it "
                                   "(Orbax params + features.json) for `genart eval`.")
    f.add_argument("--data", default="digits", help="dataset name (default: digits)")
    f.add_argument("--image-size", type=int, default=None,
                   help="square size in pixels, as the models you evaluate (default: the prepared "
                        "data's, 32 for digits and TFDS data)")
    f.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="default: the prepared data's, 1 for digits and TFDS data")
    f.add_argument("--data_dir", default="", help="prepared data (default: $TFDS_DATA_DIR or "
                   "~/tensorflow_datasets)")
    f.add_argument("--out", default=None, help="output folder (default: runs/features_DATA_SIZE)")
    f.add_argument("--steps", type=int, default=1000)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--width", type=int, default=16, help="channels of the first conv stage")
    f.add_argument("--feature-dim", type=int, default=128, help="width of the feature layer")
    f.add_argument("--temperature", type=float, default=0.5, help="NT-Xent temperature")
    f.add_argument("--augment", default="translation,cutout",
                   help="views: comma-separated subset of color,translation,cutout")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_features(args) -> int:
    from genart_jax import augment
    from genart_jax.selfsup import default_dir, train_features

    try:
        policy = augment.parse_policy(args.augment)
    except ValueError as e:
        raise _UsageError(f"--augment: {e}") from e
    data_cfg = _data_config(args.data, args.image_size, args.channels, args.data_dir)
    out = Path(args.out) if args.out else default_dir(args.data, data_cfg.image_size)
    meta = train_features(data_cfg, out, steps=args.steps, batch_size=args.batch_size,
                          seed=args.seed, width=args.width, feature_dim=args.feature_dim,
                          temperature=args.temperature, policy=policy,
                          progress=not args.no_progress)
    print(f"{meta['dataset']} SimCLR encoder ({meta['image_size']}x{meta['image_size']}x"
          f"{meta['channels']}, {meta['metric_dim']}-d features: first-layer statistics + "
          f"{meta['feature_dim']}-d feature layer, views "
          f"{'+'.join(meta['policy']) or 'identity'}): {meta['steps']} steps in "
          f"{meta['seconds']} s on {meta['train_examples']} {meta['train_split']} images; "
          f"NT-Xent loss {meta['loss_first_20']:.3f} -> {meta['loss_last_20']:.3f} (chance "
          f"{meta['loss_chance']:.3f}); saved to {out}")
    return 0


def _quality(args, data_cfg, split: str, which, fake_fn) -> dict:
    """`quality.compare` with the flags of `genart eval`."""
    from genart_jax import quality

    return quality.compare(data_cfg, split, which, fake_fn, num=args.num, limit=args.limit,
                           subset_seed=args.subset_seed, seed=args.seed,
                           classifier=args.classifier, extractor=args.extractor,
                           extractor_params=args.extractor_params,
                           extractor_kwargs=args.extractor_kwargs)


def _print_quality(result: dict, what: str) -> None:
    from genart_jax.train.requests import drawn

    made = f"{result['generated_images']} images"
    if "reference_split_images" in result:
        made = drawn(result["generated_images"], result["reference_split_images"],
                     result["subset_seed"])
    real = drawn(result["real_images"], result["real_split_images"], result["subset_seed"])
    print(f"{what} ({made}) vs {result['real_split']} split ({real}):")
    for key, val in result.items():
        if key.startswith(("FID", "KID", "precision", "recall")):
            print(f"  {key}: {val:.6g}" if key.startswith("KID") else f"  {key}: {val:.4f}")


def _add_eval(sub) -> None:
    """The flags of `genart eval`."""
    v = sub.add_parser(
        "eval", help="sample quality (FID, KID, precision/recall in a classifier's features) "
                     "of a GAN or VAE; for a VAE also -ELBO and the K-sample IWAE bound",
        description="genart eval --workdir W [--metrics fid,kid,pr]: samples of the model vs "
                    "held-out real images, in the features of a classifier trained with "
                    "`genart train-classifier` (or your own --extractor). A VAE workdir "
                    "reports its likelihood bounds, and the metrics when --metrics is given. "
                    "--reference SPLIT scores real images of SPLIT instead of a model.")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="training workdir (latest checkpoint, or --step)")
    src.add_argument("--reference", metavar="SPLIT", default=None,
                     help="no model: score the real images of SPLIT against the held-out "
                          "split (a real-vs-real baseline; data from --data/--image-size/"
                          "--channels); its images are a seeded random draw (--subset-seed) "
                          "of as many as the held-out ones (or --num)")
    v.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    v.add_argument("--samples", type=int, default=None,
                   help="VAE: K importance samples (default: config vae.eval_samples); "
                        "hvae: ELBO draws per image (default 1)")
    v.add_argument("--split", default=None, help="held-out split of real images (default: "
                   "config vae.eval_split for a VAE, hvae.eval_split for an hvae, 'test' "
                   "otherwise)")
    v.add_argument("--limit", type=int, default=None,
                   help="use N real images of the held-out split only: a seeded random draw "
                        "over the whole split (--subset-seed), not the first N")
    v.add_argument("--subset-seed", type=int, default=0,
                   help="seed of every random subset of a split scored (--limit, "
                        "--reference); reported with the results (default 0)")
    v.add_argument("--metrics", default=None,
                   help="comma-separated subset of fid,kid,pr (default: all for a GAN or "
                        "--reference; none for a VAE)")
    v.add_argument("--classifier", default=None, help="folder written by `genart "
                   "train-classifier` (default: runs/classifier_DATA_SIZE)")
    v.add_argument("--extractor", default=None, metavar="NAME",
                   help="the feature space: 'classifier' (genart train-classifier), 'selfsup' "
                        "(genart train-features), 'inception' (the FID Inception-v3, weights "
                        "in --extractor-params FILE.npz|.safetensors), or your own Flax "
                        "module package.module:ClassName (default: the classifier if one is "
                        "trained for the data, else the self-supervised encoder)")
    v.add_argument("--extractor-params", default=None,
                   help="selfsup: its folder (default: runs/features_DATA_SIZE); inception: "
                        "the weights file; a module: its params (flax msgpack)")
    v.add_argument("--extractor-kwargs", default=None,
                   help="JSON file of its constructor arguments (default: none)")
    v.add_argument("--num", type=int, default=None,
                   help="generated images (default: as many as real images)")
    v.add_argument("--seed", type=int, default=0, help="seed of the generated images and KID")
    v.add_argument("--no-ema", action="store_true",
                   help="GAN, hvae: the raw weights instead of their moving average")
    v.add_argument("--temperature", default=None, metavar="T[,T...]",
                   help="hvae: the prior's temperature of the samples --metrics scores (one "
                        "value or one per latent group; default: the config's)")
    v.add_argument("--data", default="digits", help="--reference: dataset name")
    v.add_argument("--data_dir", default="", help="--reference: prepared data (default: "
                   "$TFDS_DATA_DIR or ~/tensorflow_datasets)")
    v.add_argument("--image-size", type=int, default=None,
                   help="--reference: image size (default: the prepared data's, 32 for "
                        "digits and TFDS data)")
    v.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="--reference: channels (default: the prepared data's, 1 for digits "
                        "and TFDS data)")


def _eval(args) -> int:
    import json

    from genart_jax import quality
    from genart_jax.data import read_split
    from genart_jax.data.pipeline import split_length
    from genart_jax.train.families import family_of
    from genart_jax.train.requests import EvalRequest

    try:
        which = quality.parse_metrics(args.metrics) if args.metrics else None
    except ValueError as e:
        raise _UsageError(str(e)) from e
    if args.reference:
        data_cfg = _data_config(args.data, args.image_size, args.channels, args.data_dir)
        split = args.split or "test"
        if split == args.reference:
            raise _UsageError(f"--reference {split} is the held-out split itself; compare "
                              f"another split (e.g. --reference train)")

        def real_images(num):  # a seeded draw over the whole split, not its first files
            images, _ = read_split(data_cfg, args.reference, num, seed=args.subset_seed)
            return images

        result = {"reference_split": args.reference,
                  "reference_split_images": split_length(data_cfg, args.reference),
                  **_quality(args, data_cfg, split, which or quality.metrics.METRICS,
                             real_images)}
        _print_quality(result, f"{args.reference} split")
        print(json.dumps(result))
        return 0
    cfg, state, step = _restore(args)
    plan = family_of(cfg).plan_eval(cfg, state, EvalRequest(
        split=args.split, samples=args.samples, limit=args.limit, subset_seed=args.subset_seed,
        use_ema=not args.no_ema, metrics=which, temperature=_temperatures(args.temperature)))
    result = {"step": step, **plan.fields}
    if plan.summary is not None:
        print(f"step {step}, {plan.summary}")
    if plan.metrics:
        result.update(seed=args.seed, **_quality(
            args, cfg.data, plan.split, plan.metrics,
            lambda num: quality.model_samples(plan.config or cfg, state, num=num,
                                              seed=args.seed, use_ema=not args.no_ema)))
        _print_quality(result, f"step {step} {plan.samples_of}")
    out = Path(args.workdir) / "eval.json"
    quality.check_comparable(out, result)
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"appended to {out}")
    return 0


def _add_feedback(sub) -> None:
    """The flags of `genart feedback`."""
    f = sub.add_parser("feedback", help="rate numbered samples of a GAN; each round is drawn "
                                        "from a distribution refit to what you liked")
    f.add_argument("--workdir", required=True, help="trained GAN workdir (session in "
                   "WORKDIR/feedback/)")
    f.add_argument("--like", default=None, help="sample numbers you like, e.g. 3,7")
    f.add_argument("--dislike", default=None, help="sample numbers you dislike, e.g. 1")
    f.add_argument("--ratings", default=None, help='JSON file {"like": [...], "dislike": [...]}')
    f.add_argument("--num", type=int, default=None,
                   help="samples per new round (default: as the last round, 64 at first)")
    f.add_argument("--seed", type=int, default=None, help="new sessions only (default 0)")
    f.add_argument("--step", type=int, default=None, help="new sessions: checkpoint step")
    f.add_argument("--no-ema", action="store_true", help="new sessions: raw generator weights")
    f.add_argument("--smoothing", type=float, default=None,
                   help="new sessions: CEM step size a in (0, 1] (default 0.9)")
    f.add_argument("--std-floor", type=float, default=None,
                   help="new sessions: smallest latent std (default 0.3)")
    f.add_argument("--contraction", type=float, default=None,
                   help="new sessions: std shrink per rated round in (0, 1] (default 0.6)")
    f.add_argument("--screen", type=int, default=None,
                   help="new sessions: proposals per sample kept by the preference model "
                        "(default 16; 1 = off)")
    f.add_argument("--ridge", type=float, default=None,
                   help="new sessions: ridge strength of the preference model (default 1)")
    f.add_argument("--temperature", type=float, default=None,
                   help="new sessions of an hvae: temperature of the lower latent groups (the "
                        "top group is steered; default hvae.temperature)")
    f.add_argument("--save-direction", default=None, metavar="FILE.npy",
                   help="write the liked-minus-disliked latent direction")
    f.add_argument("--finetune", type=int, default=None, metavar="STEPS",
                   help="distil the refit distribution into a new checkpoint "
                        "WORKDIR/feedback/finetuned-roundK")


def _feedback(args) -> int:
    from genart_jax import feedback as fb

    session = fb.FeedbackSession(args.workdir, step=args.step, seed=args.seed,
                                 use_ema=False if args.no_ema else None,
                                 smoothing=args.smoothing, std_floor=args.std_floor,
                                 contraction=args.contraction, screen=args.screen,
                                 ridge=args.ridge, temperature=args.temperature)
    if args.finetune is not None:
        session.check_finetune()
    given = args.like is not None or args.dislike is not None
    if given and args.ratings:
        raise fb.FeedbackError("give --like/--dislike or --ratings, not both")
    if args.ratings:
        given, (like, dislike) = True, fb.read_ratings_file(args.ratings)
    else:
        like, dislike = args.like, args.dislike
    interactive = not given and args.finetune is None and not args.save_direction \
        and sys.stdin.isatty()
    while True:
        rec = None
        try:
            rec = session.rate(like, dislike) if given else None
        except fb.FeedbackError as e:  # at the prompt: say so and ask again
            if not interactive:
                raise
            print(f"genart: {e}", file=sys.stderr)
        if rec:
            d = session.distribution.summary()
            print(f"round {rec['round']}: liked {len(rec['liked'])}, disliked "
                  f"{len(rec['disliked'])} of {rec['num']}; next round: latent mean norm "
                  f"{d['mean_norm']:.2f}, mean std {d['std_mean']:.2f}")
        session.draw(args.num)
        grid = session.path(session.round, ".png")
        if not interactive:
            break
        print(f"round {session.round}: look at {grid}")
        try:
            like = input("numbers you like (e.g. 3,7; q to stop): ").strip()
            if like.lower() in ("q", "quit"):
                break
            dislike, given = input("numbers you dislike: ").strip(), True
        except EOFError:
            break
    if args.save_direction:
        print(f"wrote the liked-minus-disliked direction to "
              f"{session.save_direction(args.save_direction)}")
    if args.finetune is not None:
        out = session.finetune(args.finetune)
        print(f"fine-tuned for {args.finetune} steps: `genart sample --workdir {out}`")
    print(f"round {session.round} of {session.dir}: {grid}; rate it with `genart feedback "
          f"--workdir {args.workdir} --like 3,7 --dislike 1`")
    return 0


def _add_directions(sub) -> None:
    """The flags of `genart directions`."""
    d = sub.add_parser(
        "directions", help="per-class latent directions of an unconditional GAN, found with "
                           "a classifier",
        description="Generates --num prior samples, classifies them, and writes for each class "
                    "K the latent direction mean(latents classified K) - mean(the rest) to "
                    "OUT/class_K.npy (for `genart sample --direction`), OUT/directions.json "
                    "and OUT/directions.png (a row per class: the same latents pushed by its "
                    "direction).")
    d.add_argument("--workdir", required=True, help="trained unconditional GAN workdir")
    d.add_argument("--classifier", default=None, help="folder written by `genart "
                   "train-classifier` (default: runs/classifier_DATA_SIZE)")
    d.add_argument("--num", type=int, default=4096, help="prior samples to classify")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    d.add_argument("--no-ema", action="store_true", help="use the raw generator weights")
    d.add_argument("--strength", type=float, default=2.0, help="strength shown in the PNG")
    d.add_argument("--columns", type=int, default=8, help="latents per row of the PNG")
    d.add_argument("--report", nargs="?", const="1,2,3", default=None, metavar="STRENGTHS",
                   help="also print, per class, the share of --report-num held-out prior "
                        "samples classified as it before and after adding its direction at "
                        "these strengths (default 1,2,3)")
    d.add_argument("--report-num", type=int, default=256)
    d.add_argument("--out", required=True, help="output folder")


def _directions(args) -> int:
    from genart_jax import directions as dirs
    from genart_jax.classifier import ClassifierError, matching_classifier

    try:
        report = [float(t) for t in args.report.split(",") if t.strip()] if args.report else []
    except ValueError as e:
        raise _UsageError(f"--report takes strengths like 1,2,3; got {args.report!r}") from e
    if args.num <= 0 or args.columns <= 0 or args.report_num <= 0:
        raise _UsageError("--num, --columns and --report-num must be positive")
    gen = dirs.checkpoint_generator(args.workdir, args.step, use_ema=not args.no_ema)
    clf = matching_classifier(gen.cfg.data, args.classifier, purpose=" to classify the samples")
    num_classes = int(clf.meta["num_classes"])
    if num_classes < 2:
        raise ClassifierError(f"the classifier has {num_classes} class; directions need 2 or "
                              f"more")
    info = {"workdir": str(args.workdir), "step": gen.step, "ema": not args.no_ema,
            "classifier": str(args.classifier or "default"), "classifier_name": clf.name}
    result = dirs.find_directions(gen, clf, num_classes, args.out, num=args.num, seed=args.seed,
                                  strength=args.strength, cols=args.columns, report=report,
                                  report_num=args.report_num, info=info)
    counts = ", ".join(f"{k}: {c}" for k, c in result["counts"].items())
    print(f"{args.num} samples of step {gen.step} classified ({counts})")
    for k, why in result["skipped"].items():
        print(f"  class {k} skipped: {why}")
    found = list(result["directions"])
    if found:
        print(f"wrote class_K.npy for classes {','.join(found)} and directions.png (first row "
              f"as drawn, then one row per class at strength {args.strength}) to {args.out}; "
              f"use one with `genart sample --workdir {args.workdir} --out s.png --direction "
              f"{Path(args.out) / f'class_{found[0]}.npy'} --strength 2`")
    if report:
        steer = result["steering"]
        print(f"share classified as the class, {steer['num']} prior samples (seed "
              f"{steer['seed']}), by strength:")
        print("class  " + "  ".join(f"{s:>5g}" for s in steer["strengths"]))
        for k, row in steer["shares"].items():
            print(f"{k:>5}  " + "  ".join(f"{v:5.2f}" for v in row))
    print(f"summary in {Path(args.out) / 'directions.json'}")
    return 0


def _add_studio(sub) -> None:
    """The flags of `genart studio`."""
    st = sub.add_parser("studio", help="a local web page to steer a GAN (rate, themes, "
                        "truncation, directions, walks, fine-tune) and look at the run",
                        description="Serves the feedback session of WORKDIR (the same "
                        "WORKDIR/feedback/ files as `genart feedback`) and the run's files on "
                        "http://HOST:PORT/?token=...; the token is printed at start.")
    st.add_argument("--workdir", required=True, help="trained GAN workdir")
    st.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    st.add_argument("--host", default="127.0.0.1", help="address to listen on (other than "
                    "127.0.0.1: anyone who can reach it with the token can use it)")
    st.add_argument("--num", type=int, default=16, help="samples in a new session's rounds")
    st.add_argument("--directions", default=None, help="folder of `genart directions` "
                    "(default: WORKDIR/directions)")
    st.add_argument("--seed", type=int, default=None, help="new sessions only (default 0)")
    st.add_argument("--temperature", type=float, default=None,
                    help="new sessions of an hvae: temperature of the lower latent groups "
                         "(default hvae.temperature; the page has a slider)")


def _studio(args) -> int:
    from genart_jax.studio import Studio
    from genart_jax.studio.server import serve

    if not 0 <= args.port <= 65535 or not 1 <= args.num <= 256:
        raise _UsageError(f"--port must be in 0..65535 and --num in 1..256, got {args.port} "
                          f"and {args.num}")
    studio = Studio(args.workdir, directions=args.directions, num=args.num,
                    session_options={"seed": args.seed, "temperature": args.temperature})
    try:
        server = serve(studio, args.host, args.port)
    except OSError as e:
        raise _UsageError(f"cannot listen on {args.host}:{args.port}: {e}") from e
    print(f"genart studio for {args.workdir}: open {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("genart studio: stopped")
    finally:
        server.server_close()
    return 0


class _UsageError(ValueError):
    """A flag combination that cannot work for this workdir."""


def _add_prepare(sub) -> None:
    """The flags of `genart prepare`."""
    r = sub.add_parser(
        "prepare", help="prepare a TFDS dataset, or a folder of your own images, once",
        description="genart prepare NAME (a TFDS dataset; needs the [prepare] extra) or "
                    "genart prepare folder PATH --name NAME (your images; no TensorFlow)")
    r.add_argument("what", help="a TFDS dataset name, or the word 'folder'")
    r.add_argument("path", nargs="?", default=None, help="with 'folder': the image folder")
    r.add_argument("--data_dir", default="", help="where prepared data go (default: "
                   "$TFDS_DATA_DIR or ~/tensorflow_datasets)")
    r.add_argument("--manual-dir", default=None, help="TFDS: files downloaded by hand")
    r.add_argument("--name", default=None, help="folder: the dataset's name (lower_snake_case)")
    r.add_argument("--size", type=int, default=64, help="folder: square side in pixels")
    r.add_argument("--channels", type=int, default=3, choices=(1, 3))
    r.add_argument("--labels-from-subfolders", action="store_true",
                   help="folder: each subfolder is a class (theme)")
    r.add_argument("--strict", action="store_true",
                   help="folder: stop at the first unreadable file instead of skipping it")
    r.add_argument("--test-fraction", type=float, default=0.1,
                   help="folder: share of the images held out as split 'test' (per class; "
                        "chosen by file name; default 0.1; 0: none)")
    r.add_argument("--overwrite", action="store_true",
                   help="folder: rebuild NAME even if it was prepared from another source, "
                        "size or channel count")


def _prepare(args) -> int:
    if args.what != "folder":
        from genart_jax.data.prepare import prepare_tfds

        if args.path:
            raise _UsageError(f"unexpected {args.path!r}: only `genart prepare folder PATH` "
                              "takes a path")
        prepare_tfds(args.what, args.data_dir, args.manual_dir)
        return 0
    from genart_jax.data.folder import REPORT, prepare_folder

    if not args.path or not args.name:
        raise _UsageError("usage: genart prepare folder PATH --name NAME [--size 64] ...")
    report = prepare_folder(args.path, args.name, data_dir=args.data_dir, size=args.size,
                            channels=args.channels,
                            labels_from_subfolders=args.labels_from_subfolders,
                            strict=args.strict, test_fraction=args.test_fraction,
                            overwrite=args.overwrite)
    size, channels = report["size"], report["channels"]  # the data on disk
    where = f" --config.data.data_dir={args.data_dir}" if args.data_dir else ""
    flag = f" --data_dir {args.data_dir}" if args.data_dir else ""
    print(f"{report['name']}: {report['images']} images of {size}x{size}x"
          f"{channels} ({', '.join(f'{n} {s}' for s, n in report['splits'].items())}), "
          f"{len(report['skipped'])} skipped, classes {report['classes']}; "
          f"report {report['data_dir']}/{report['name']}/{REPORT}. Train with --config."
          f"data.name={report['name']}{where} (size and channels come from its "
          f"prepared.json, as for `genart train-features --data {report['name']}{flag}` and "
          f"`genart eval --reference train --data {report['name']}{flag}`)")
    for item in report["skipped"][:10]:
        print(f"  skipped {item['file']}: {item['reason']}")
    return 0


def _add_bench(sub) -> None:
    """The flags of `genart bench`."""
    b = sub.add_parser("bench", help="throughput per device, MFU, drivers, dtypes, fusion, "
                                     "PyTorch peers; writes results.json/.md and plots")
    b.add_argument("--configs", default="bench_dcgan32", help="comma-separated config names")
    b.add_argument("--devices", default=None, help="device counts, e.g. 1,8 (default: 1 and all)")
    b.add_argument("--drivers", default="shard_map,pmap")
    b.add_argument("--dtypes", default="float32,bfloat16")
    b.add_argument("--steps-per-call", default="1,4", help="k steps fused per call, e.g. 1,4")
    b.add_argument("--batches", default=None, help="global batch sizes (default: the config's)")
    b.add_argument("--steps", type=int, default=20, help="timed steps per case (at least)")
    b.add_argument("--rounds", type=int, default=4,
                   help="the timed steps are split over this many rounds that interleave all "
                        "cases and peers of a config")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--no-peers", action="store_true", help="skip the PyTorch references")
    b.add_argument("--no-xla-flops", action="store_true",
                   help="skip XLA:CPU's FLOP count beside the model's (one compile less)")
    b.add_argument("--out", default="benchmarks/results/latest")


def _bench(args) -> int:
    import jax

    from genart_jax.bench.harness import run
    from genart_jax.config import DTYPES

    def ints(text):
        return [int(t) for t in text.split(",") if t.strip()]

    n = jax.device_count()
    devices = ints(args.devices) if args.devices else sorted({1, n})
    if max(devices) > n:
        raise _UsageError(f"--devices {args.devices}: only {n} device(s) here")
    if args.steps < 1 or args.rounds < 1:
        raise _UsageError(f"--steps {args.steps} --rounds {args.rounds}: both must be >= 1")
    dtypes = args.dtypes.split(",")
    bad = sorted(set(dtypes) - set(DTYPES))
    if bad:
        raise _UsageError(f"--dtypes {args.dtypes}: {', '.join(bad)} is not "
                          f"{' or '.join(DTYPES)}")
    run([c.strip() for c in args.configs.split(",")], devices, args.drivers.split(","),
        dtypes, ints(args.steps_per_call),
        ints(args.batches) if args.batches else None, args.steps, args.warmup,
        not args.no_peers, Path(args.out), rounds=args.rounds,
        xla_flops=not args.no_xla_flops)
    return 0


def _add_export(sub) -> None:
    """The flags of `genart export`."""
    e = sub.add_parser("export", help="write the generator alone (.msgpack + .json config)")
    e.add_argument("--workdir", required=True)
    e.add_argument("--out", required=True, help="FILE.msgpack; FILE.json is written beside it")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("--no-ema", action="store_true", help="export the raw generator weights")


def _export(args) -> int:
    from genart_jax.export import export_generator

    cfg, state, step = _restore(args)
    path = export_generator(cfg, state, args.out, step=step, use_ema=not args.no_ema)
    print(f"Exported the generator of step {step} to {path} (+ {path.with_suffix('.json')})")
    return 0


class _DropOrbaxErrors(logging.Filter):
    """Orbax's log of a failed background write (the failure itself reaches the CLI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("orbax" in record.pathname and record.levelno >= logging.ERROR)


def _hide_closed_loop(previous):
    """An unraisable-exception hook that drops 'Event loop is closed' from TensorStore
    callbacks arriving after a failed save's event loop closed; anything else is passed on."""
    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook.hides_closed_loop = True
    return hook


def quiet_library_noise() -> None:
    """No tracebacks beside the CLI's one-line errors: see _DropOrbaxErrors, _hide_closed_loop."""
    from absl import logging as absl_logging  # first: it sets up the "absl" logger

    absl_log = absl_logging.get_absl_logger()
    if not any(isinstance(f, _DropOrbaxErrors) for f in absl_log.filters):
        absl_log.addFilter(_DropOrbaxErrors())
    if not getattr(sys.unraisablehook, "hides_closed_loop", False):
        sys.unraisablehook = _hide_closed_loop(sys.unraisablehook)


COMMANDS = {  # name -> (adds its flags to the parser, runs it)
    "train": (_add_train, _train),
    "sample": (_add_sample, _sample),
    "eval": (_add_eval, _eval),
    "train-classifier": (_add_train_classifier, _train_classifier),
    "train-features": (_add_train_features, _train_features),
    "prepare": (_add_prepare, _prepare),
    "bench": (_add_bench, _bench),
    "export": (_add_export, _export),
    "feedback": (_add_feedback, _feedback),
    "directions": (_add_directions, _directions),
    "studio": (_add_studio, _studio),
}


def main(argv: list[str] | None = None) -> int:
    from genart_jax.cpu_tuning import tune_for_cpu

    tune_for_cpu()  # before JAX starts its threads and reads XLA_FLAGS: see cpu_tuning
    from genart_jax.checkpoint import CheckpointError
    from genart_jax.classifier import ClassifierError
    from genart_jax.config import ConfigError
    from genart_jax.data import DataError
    from genart_jax.directions import DirectionError
    from genart_jax.export import ExportError
    from genart_jax.feedback import FeedbackError
    from genart_jax.history import HistoryError
    from genart_jax.parallel import ParallelError
    from genart_jax.storage_errors import StorageError, storage_error
    from genart_jax.train import Preempted, TrainingDiverged
    from genart_jax.train.requests import RequestError
    from genart_jax.workdir_lock import WorkdirBusy

    quiet_library_noise()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            return _train(args, _split_overrides(extra, parser))
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command][1](args)
    except (ConfigError, DataError, ParallelError, CheckpointError, ExportError,
            ClassifierError, FeedbackError, DirectionError, HistoryError, WorkdirBusy,
            RequestError, _UsageError) as e:
        print(f"genart: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"genart: training stopped: {e}", file=sys.stderr)
        return 3
    except Preempted as e:  # 128 + signal, as a shell reports a process ended by the signal
        print(f"genart: {e}", file=sys.stderr)
        return 128 + e.signum
    except StorageError as e:  # disk full, permission denied, read-only: see storage_errors
        print(f"genart: error: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except Exception as e:  # last: anything else that is not a storage fault goes on up
        found = storage_error(e)
        if found is None:
            raise
        print(f"genart: error: {found}", file=sys.stderr)
        return EXIT_STORAGE


if __name__ == "__main__":
    sys.exit(main())
