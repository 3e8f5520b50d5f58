"""Feedback loop with a simulated user: per theme, the share of liked samples per round.

The user likes what the classifier calls `theme` and dislikes the rest; each round draws
--per-round samples from the session's refit distribution. Writes DIR/feedback_sim.json and
DIR/feedback_sim.png (matplotlib, from the [bench] extra; skipped without it).

    python -m benchmarks.feedback_sim --workdir runs/dcgan_digits \
        --classifier runs/classifier_digits --theme all --rounds 3 --per-round 64 \
        --seeds 0,1,2 --finetune 200 --out benchmarks/results/feedback_sim \
        --sessions runs/feedback_sim
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from genart_jax import feedback as fb
from genart_jax import sampling
from genart_jax.classifier import load_classifier


def finetuned_share(session: fb.FeedbackSession, user: fb.SimulatedUser, steps: int,
                    num: int) -> float:
    """Liked share of prior samples (seed 10_000) from the generator distilled by `steps`."""
    gen = fb.CheckpointGenerator(session.finetune(steps))
    return len(user.rate(gen(sampling.latents(10_000, num, gen.latent_dim)))["like"]) / num


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for theme, shares in results["shares"].items():
        ax.plot(range(1, len(shares) + 1), shares, marker="o", label=f"theme {theme}")
    ax.plot(range(1, results["rounds"] + 1), results["mean_curve"], color="black",
            linewidth=2.5, label="mean")
    ax.axhline(0.8, color="gray", linestyle="--", linewidth=1)
    ax.set(xlabel="round", ylabel="share liked", ylim=(0, 1.02),
           title=f"simulated user, {results['per_round']} ratings per round "
                 f"(mean over seeds {results['seeds']})")
    ax.set_xticks(range(1, results["rounds"] + 1))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="trained GAN workdir (not written)")
    p.add_argument("--classifier", required=True, help="folder of a trained classifier")
    p.add_argument("--theme", default="all", help="class(es) to steer toward: 3, 1,4,7 or all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=64)
    p.add_argument("--seeds", default="0", help="session seeds, e.g. 0,1,2: one run per theme "
                   "and seed")
    p.add_argument("--smoothing", type=float, default=None)
    p.add_argument("--std-floor", type=float, default=None)
    p.add_argument("--contraction", type=float, default=None)
    p.add_argument("--screen", type=int, default=None, help="proposals per sample (1 = off)")
    p.add_argument("--ridge", type=float, default=None)
    p.add_argument("--finetune", type=int, default=0, metavar="STEPS",
                   help="also distil each session and rate 'per-round' prior samples of it")
    p.add_argument("--out", required=True, help="folder for the results")
    p.add_argument("--sessions", default=None, help="folder for the sessions (default: "
                   "OUT/sessions; one theme_K session each, replaced on a rerun)")
    args = p.parse_args(argv)

    judge = load_classifier(args.classifier)
    k = judge.meta["num_classes"]
    themes = list(range(k)) if args.theme == "all" else sampling.parse_themes(args.theme, k)
    gen = fb.CheckpointGenerator(args.workdir)
    out = Path(args.out)
    results = {"command": "python -m benchmarks.feedback_sim " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "workdir": str(args.workdir), "checkpoint_step": gen.step,
               "classifier": str(args.classifier), "rounds": args.rounds,
               "per_round": args.per_round, "shares": {}, "finetuned_share": {}}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results["seeds"] = seeds
    settings = {"smoothing": args.smoothing, "std_floor": args.std_floor,
                "contraction": args.contraction, "screen": args.screen, "ridge": args.ridge}
    results["runs"] = []
    t0 = time.perf_counter()
    for theme in themes:
        for seed in seeds:
            sdir = Path(args.sessions or out / "sessions") / f"theme_{theme}_seed_{seed}"
            if (sdir / fb.SESSION).is_file():  # a previous run of this benchmark: start over
                shutil.rmtree(sdir)
            session = fb.FeedbackSession(args.workdir, session_dir=sdir, generator=gen,
                                         seed=seed, **settings)
            user = fb.SimulatedUser(judge, theme)
            run = {"theme": theme, "seed": seed,
                   "shares": fb.simulate(session, user, args.rounds, args.per_round)}
            line = f"theme {theme} seed {seed}: " + " -> ".join(f"{s:.0%}" for s in run["shares"])
            if args.finetune:
                run["finetuned_share"] = finetuned_share(session, user, args.finetune,
                                                         args.per_round)
                line += (f"; fine-tuned {args.finetune} steps, prior samples liked "
                         f"{run['finetuned_share']:.0%}")
            results["runs"].append(run)
            print(line, flush=True)
            results["settings"] = {k: session.settings[k] for k in settings}
        mine = [r for r in results["runs"] if r["theme"] == theme]
        results["shares"][str(theme)] = np.mean([r["shares"] for r in mine], axis=0).tolist()
        if args.finetune:
            results["finetuned_share"][str(theme)] = float(np.mean(
                [r["finetuned_share"] for r in mine]))
    final = [r["shares"][-1] for r in results["runs"]]
    results["mean_curve"] = np.mean([r["shares"] for r in results["runs"]], axis=0).tolist()
    results["runs_reaching_80pct"] = int(sum(f >= 0.8 for f in final))
    results["min_final_share"] = float(min(final))
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback_sim.json").write_text(json.dumps(results, indent=2))
    png = plot(results, out / "feedback_sim.png")
    print(f"mean curve {[round(x, 3) for x in results['mean_curve']]}; "
          f"{results['runs_reaching_80pct']}/{len(final)} runs (theme x seed) >= 80% in round "
          f"{args.rounds}; wrote {out / 'feedback_sim.json'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
