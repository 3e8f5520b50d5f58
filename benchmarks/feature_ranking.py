"""FID of known-good and known-bad image sets in each feature space: real-vs-real, trained
models, and degraded reals (blur, noise, colour shift, dropped modes), each against the held-out
test split, as a Markdown table (and JSON).

    PYTHONPATH=$PWD python benchmarks/feature_ranking.py --data digits --image-size 32 \\
        --channels 1 --models runs/dcgan_digits,runs/vae_digits --num 1000 \\
        --out benchmarks/results/feature_ranking_digits

Feature spaces: the self-supervised encoder (runs/features_DATA_SIZE) and, where trained,
the classifier (runs/classifier_DATA_SIZE). Candidates all have --num images (the first --num
train images for real-vs-real and the degradations); modes are the labels (classes, or
labelled subfolders)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from genart_jax import degrade, metrics, quality, selfsup
from genart_jax.classifier import META_FILE, default_dir, load_classifier
from genart_jax.data import read_split

DEGRADATIONS = (("blur sigma", degrade.blur, (0.5, 1.0, 2.0)),
                ("noise std", degrade.noise, (0.05, 0.1, 0.2)),
                ("colour shift", degrade.color_shift, (0.1, 0.2, 0.4)))


def candidates(data_cfg, models: list[str], num: int, mode_keeps: tuple[int, ...]):
    """(row name, images) of every candidate set."""
    from genart_jax.checkpoint import restore_workdir

    train, labels = read_split(data_cfg, "train")
    base = train[:num]
    yield "real train images (real vs real)", base
    for workdir in models:
        cfg, state, _, step = restore_workdir(workdir)
        yield f"{Path(workdir).name} (step {step})", quality.model_samples(cfg, state, num=num)
    for name, fn, strengths in DEGRADATIONS:
        for s in strengths:
            yield f"{name} {s}", fn(base, s)
    n_modes = len(np.unique(labels))
    for k in mode_keeps:
        kept = degrade.drop_modes(train, labels, k)[:num]
        yield f"{k} of {n_modes} modes", kept


def main() -> None:
    from genart_jax.cli import _data_config

    p = argparse.ArgumentParser()
    p.add_argument("--data", default="digits")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--models", default="", help="comma-separated workdirs")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--modes", default="7,4,1", help="how many modes to keep, e.g. 7,4,1")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    data_cfg = _data_config(args.data, args.image_size, args.channels)
    nets = [selfsup.matching_encoder(data_cfg)]
    if (default_dir(args.data, args.image_size) / META_FILE).is_file():
        nets.append(load_classifier(default_dir(args.data, args.image_size)))
    test, _ = read_split(data_cfg, "test")
    refs = [n.features(test) for n in nets]
    rows = []
    keeps = tuple(int(k) for k in args.modes.split(","))
    for name, images in candidates(data_cfg, [m for m in args.models.split(",") if m],
                                   args.num, keeps):
        row = {"set": name, "images": len(images)}
        for net, ref in zip(nets, refs, strict=True):
            row[f"FID ({net.name} features)"] = metrics.fid(ref, net.features(images))
        rows.append(row)
        print(row, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = [k for k in rows[0] if k.startswith("FID")]
    md = [f"| set (vs {len(test)} test images) | images | " + " | ".join(cols) + " |",
          "|---|---|" + "---|" * len(cols)]
    md += [f"| {r['set']} | {r['images']} | " + " | ".join(f"{r[c]:.4g}" for c in cols) + " |"
           for r in rows]
    (out / "table.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"load_average": os.getloadavg(), "fingerprints": {n.name: n.fingerprint for n in nets},
         "rows": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
