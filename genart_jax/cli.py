"""`genart train | sample`: parse flags, then call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    p = argparse.ArgumentParser(prog="genart", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a config",
                       epilog=f"Any config value can be set with {USAGE_OVERRIDES}.")
    t.add_argument("--config", default=None,
                   help="recipe file or name in configs/ (default: dcgan_digits)")
    t.add_argument("--workdir", default=None, help="output folder (default: runs/CONFIG_NAME)")
    t.add_argument("--steps", type=int, default=None, help="same as --config.train.steps")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="write a grid of samples from a trained workdir")
    s.add_argument("--workdir", required=True)
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    s.add_argument("--no-ema", action="store_true",
                   help="use the raw generator weights instead of their moving average")
    return p


def _train(args, overrides: dict[str, str]) -> int:
    from genart_jax.config import load_config, resolve_config_path
    from genart_jax.parallel import maybe_initialize_distributed
    from genart_jax.train import train_and_evaluate

    maybe_initialize_distributed()
    if args.steps is not None:
        overrides = {**overrides, "train.steps": str(args.steps)}
    cfg = load_config(args.config, overrides)
    workdir = args.workdir or str(Path("runs") / resolve_config_path(args.config).stem)
    train_and_evaluate(cfg, workdir, progress=not args.no_progress)
    return 0


def _sample(args) -> int:
    from genart_jax import checkpoint, sampling
    from genart_jax.config import from_json
    from genart_jax.train import abstract_state

    config_file = Path(args.workdir) / "config.json"
    if not config_file.is_file():
        raise checkpoint.CheckpointError(
            f"{args.workdir} has no config.json: is it a genart_jax workdir? Train with "
            f"`genart train --workdir {args.workdir}` first")
    cfg = from_json(config_file.read_text())
    state, _, step = checkpoint.restore(args.workdir, abstract_state(cfg), args.step)
    use_ema = not args.no_ema
    params = state.ema_g_params if use_ema else state.g_params
    images = sampling.generate(cfg, params, state.g_batch_stats, num=args.num, seed=args.seed,
                               recalibrate=use_ema)
    out = sampling.save_png(sampling.image_grid(images), args.out)
    print(f"Wrote {args.num} samples from step {step} ({'EMA' if use_ema else 'raw'} "
          f"generator) to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from genart_jax.checkpoint import CheckpointError
    from genart_jax.config import ConfigError
    from genart_jax.data import DataError
    from genart_jax.parallel import ParallelError
    from genart_jax.train import TrainingDiverged

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            return _train(args, _split_overrides(extra, parser))
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return _sample(args)
    except (ConfigError, DataError, ParallelError, CheckpointError) as e:
        print(f"genart: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"genart: training stopped: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
