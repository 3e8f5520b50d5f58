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
    t.add_argument("--no-resume", action="store_true",
                   help="start over even if the workdir has checkpoints (the old run is moved "
                        "to WORKDIR/replaced-TIME/)")

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

    e = sub.add_parser("export", help="write the generator alone (.msgpack + .json config)")
    e.add_argument("--workdir", required=True)
    e.add_argument("--out", required=True, help="FILE.msgpack; FILE.json is written beside it")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("--no-ema", action="store_true", help="export the raw generator weights")
    return p


def _restore_workdir(workdir: str, step: int | None):
    """(config, host state, step) of a training workdir's checkpoint."""
    from genart_jax import checkpoint
    from genart_jax.config import from_json
    from genart_jax.train import abstract_state

    config_file = Path(workdir) / "config.json"
    if not config_file.is_file():
        raise checkpoint.CheckpointError(
            f"{workdir} has no config.json: is it a genart_jax workdir? Train with "
            f"`genart train --workdir {workdir}` first")
    cfg = from_json(config_file.read_text())
    state, _, step = checkpoint.restore(workdir, abstract_state(cfg), step)
    return cfg, state, step


def _train(args, overrides: dict[str, str]) -> int:
    from genart_jax.config import load_config, resolve_config_path
    from genart_jax.parallel import maybe_initialize_distributed
    from genart_jax.train import train_and_evaluate

    maybe_initialize_distributed()
    if args.steps is not None:
        overrides = {**overrides, "train.steps": str(args.steps)}
    cfg = load_config(args.config, overrides)
    workdir = args.workdir or str(Path("runs") / resolve_config_path(args.config).stem)
    train_and_evaluate(cfg, workdir, progress=not args.no_progress, resume=not args.no_resume)
    return 0


def _sample(args) -> int:
    from genart_jax import sampling
    from genart_jax.export import load_generator

    if args.from_export:
        cfg, params, stats, meta = load_generator(args.from_export)
        step, kind = meta["step"], f"exported {'EMA' if meta['ema'] else 'raw'}"
    else:
        cfg, state, step = _restore_workdir(args.workdir, args.step)
        params, stats = sampling.generator_variables(cfg, state, not args.no_ema)
        kind = "raw" if args.no_ema else "EMA"
    images = sampling.generate(cfg, params, stats, num=args.num, seed=args.seed)
    out = sampling.save_png(sampling.image_grid(images), args.out)
    print(f"Wrote {args.num} samples from step {step} ({kind} generator) to {out}")
    return 0


def _export(args) -> int:
    from genart_jax.export import export_generator

    cfg, state, step = _restore_workdir(args.workdir, args.step)
    path = export_generator(cfg, state, args.out, step=step, use_ema=not args.no_ema)
    print(f"Exported the generator of step {step} to {path} (+ {path.with_suffix('.json')})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from genart_jax.checkpoint import CheckpointError
    from genart_jax.config import ConfigError
    from genart_jax.data import DataError
    from genart_jax.export import ExportError
    from genart_jax.parallel import ParallelError
    from genart_jax.train import Preempted, TrainingDiverged

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            return _train(args, _split_overrides(extra, parser))
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return _sample(args) if args.command == "sample" else _export(args)
    except (ConfigError, DataError, ParallelError, CheckpointError, ExportError) as e:
        print(f"genart: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"genart: training stopped: {e}", file=sys.stderr)
        return 3
    except Preempted as e:  # 128 + signal, as a shell reports a process ended by the signal
        print(f"genart: {e}", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
