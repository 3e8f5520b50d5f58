"""Do a conditional GAN's themes come out as their classes? Generate N samples per class from a
trained workdir (EMA generator, as `genart sample` does) and classify them with a logistic
regression fitted on the real training split; report its accuracy on the held-out split (how
far to trust it) and on the samples of each theme.

    python benchmarks/theme_accuracy.py --workdir runs/cdcgan_digits [--per-theme 100]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.linear_model import LogisticRegression

from genart_jax import sampling
from genart_jax.data import read_split
from genart_jax.train.workdir import restore_workdir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--per-theme", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg, state, _, step = restore_workdir(args.workdir)
    k = cfg.model.num_classes
    if k <= 0:
        raise SystemExit("this workdir holds an unconditional model (model.num_classes=0)")
    x, y = read_split(cfg.data, "train")
    xt, yt = read_split(cfg.data, "test")
    clf = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
    params, stats = sampling.generator_variables(cfg, state, cfg.sample.use_ema)
    labels, _ = sampling.theme_labels(k * args.per_theme, k)
    fake = sampling.generate(cfg, params, stats, num=len(labels), seed=args.seed, labels=labels)
    pred = clf.predict(fake.reshape(len(fake), -1))
    per_theme = {int(c): float(np.mean(pred[labels == c] == c)) for c in range(k)}
    print(json.dumps({
        "workdir": args.workdir, "step": step, "samples": len(fake),
        "classifier_test_accuracy": round(float(clf.score(xt.reshape(len(xt), -1), yt)), 4),
        "theme_accuracy": round(float(np.mean(pred == labels)), 4),
        "per_theme": {c: round(a, 3) for c, a in per_theme.items()}}))


if __name__ == "__main__":
    main()
