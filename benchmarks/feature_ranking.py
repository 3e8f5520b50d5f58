"""FID and KID of known-good and known-bad image sets in each feature space: real-vs-real,
trained models, and degraded reals (blur, noise, colour shift, dropped modes), each against the
held-out test split, as a Markdown table (and JSON), with a ranking check per column.

    PYTHONPATH=$PWD python benchmarks/feature_ranking.py --data digits --image-size 32 \\
        --channels 1 --models runs/dcgan_digits,runs/dcgan_digits@1000,runs/vae_digits \\
        --num 1000 --out benchmarks/results/feature_ranking_2digits

Feature spaces: the self-supervised encoder (runs/features_DATA_SIZE), its feature layer alone
(the feature space before the first-layer statistics) and, where trained, the classifier
(runs/classifier_DATA_SIZE). Candidates have --num images (--num train images, a fixed
random subset (seed 0), for real-vs-real and the degradations, which stand in for a model that has
learnt the train split); modes are the labels (classes, or labelled subfolders). A model
trained at another size (the 28 px VAE) has its samples resized as the data pipeline resizes
reals (`quality.resize_like_data`: 8-bit grid, bicubic), and the train images read at that size
and resized the same way are a row of their own: the part of the model's FID the resize
makes.

KID is `genart eval`'s (`metrics.compute`: mean and std of unbiased MMD^2 over 100 subsets of
min(1000, half the smaller set)); unlike FID its expectation does not grow as a set shrinks.
The mode-dropped sets hold fewer images than the others, and FID's finite-sample bias grows as
N shrinks, so each is paired with a control row: that many real train images (a random
subset), the real-vs-real value a mode-dropped set of that size must beat. `--encoder` scores
another encoder than the default (e.g. one trained with another `--seed`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from genart_jax import degrade, metrics, quality, selfsup
from genart_jax.classifier import META_FILE, default_dir, load_classifier
from genart_jax.data import read_split

DEGRADATIONS = (("blur sigma", degrade.blur, (0.5, 1.0, 2.0)),
                ("noise std", degrade.noise, (0.05, 0.1, 0.2)),
                ("colour shift", degrade.color_shift, (0.1, 0.2, 0.4)))
REAL = "real train images (real vs real)"


def parse_model(spec: str) -> tuple[str, int | None]:
    """"WORKDIR" or "WORKDIR@STEP" -> (workdir, step or None for the newest)."""
    workdir, _, step = spec.partition("@")
    return workdir, int(step) if step else None


def candidates(data_cfg, models: list[str], num: int, mode_keeps: tuple[int, ...]):
    """(row kind, row name, images) of every candidate set; kind is real, model, resize
    control, a degradation's name, or modes."""
    from genart_jax.train.workdir import restore_workdir

    train, labels = read_split(data_cfg, "train")
    order = np.random.default_rng(0).permutation(len(train))  # folders are stored by mode
    train, labels = train[order], labels[order]
    base = train[:num]
    size = data_cfg.image_size
    yield "real", REAL, base
    controls = set()
    for spec in models:
        workdir, step = parse_model(spec)
        cfg, state, _, step = restore_workdir(workdir, step)
        s = cfg.data.image_size
        if s != size and s not in controls:
            controls.add(s)
            small_cfg = cfg.data.copy_and_resolve_references()
            with small_cfg.unlocked():
                small_cfg.update(name=data_cfg.name, data_dir=data_cfg.data_dir)
            small = read_split(small_cfg, "train")[0][order][:num]  # the same images as base
            yield "control", f"real train images at {s} px, resized to {size}", \
                quality.resize_like_data(small, size)
        how = f", {s}->{size} px" if s != size else ""
        yield "model", f"{Path(workdir).name} (step {step}{how})", \
            quality.resize_like_data(quality.model_samples(cfg, state, num=num), size)
    for name, fn, strengths in DEGRADATIONS:
        for s in strengths:
            yield name, f"{name} {s}", fn(base, s)
    n_modes = len(np.unique(labels))
    for k in mode_keeps:
        kept = degrade.drop_modes(train, labels, k)[:num]
        yield "modes", f"{k} of {n_modes} modes", kept
        if len(kept) < len(base):
            yield "control", f"real train images, {len(kept)} (as many as {k} of " \
                             f"{n_modes} modes)", base[:len(kept)]


def ranking_checks(rows: list[dict], col: str) -> list[str]:
    """For one FID or KID column: is each degradation (and mode dropping) above real-vs-real and
    increasing in strength?"""
    scale = 1e3 if col.startswith("KID") else 1.0  # KID x 1000, as in the table
    real = scale * next(r[col] for r in rows if r["kind"] == "real")
    out = []
    for kind in [k for k in dict.fromkeys(r["kind"] for r in rows)
                 if k not in ("real", "model", "control")]:
        vals = [real] + [scale * r[col] for r in rows if r["kind"] == kind]
        ok = all(a < b for a, b in zip(vals[:-1], vals[1:], strict=False))
        out.append(f"{kind}: {'monotone' if ok else 'NOT monotone'} "
                   f"({(' < ' if ok else ', ').join(f'{v:.4g}' for v in vals)})")
    pairs = [(a, b) for a, b in zip(rows[:-1], rows[1:], strict=True)
             if a["kind"] == "modes" and b["kind"] == "control"]
    if pairs:
        out.append("modes against as many real images: " + ", ".join(
            f"{a['set']} {scale * a[col]:.4g} {'>' if a[col] > b[col] else 'NOT >'} "
            f"{scale * b[col]:.4g}"
            for a, b in pairs))
    return out


def model_order(rows: list[dict], col: str) -> list[str]:
    """The model rows from best (lowest FID or KID) to worst in one column."""
    return [r["set"] for r in sorted((r for r in rows if r["kind"] == "model"),
                                     key=lambda r: r[col])]


class FeatureLayerOnly:
    """The encoder's feature layer alone (the v1 feature space, before the first-layer
    statistics were added), for the before/after comparison."""

    def __init__(self, enc: selfsup.Encoder):
        self.enc, self.split = enc, 3 * enc.meta["width"]
        self.name = f"{enc.name}, feature layer only"
        self.fingerprint = enc.fingerprint

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.enc.features(images)[:, self.split:]


def main() -> None:
    from genart_jax.cli import _data_config

    p = argparse.ArgumentParser()
    p.add_argument("--data", default="digits")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--data_dir", default="")
    p.add_argument("--models", default="", help="comma-separated WORKDIR or WORKDIR@STEP")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--modes", default="7,4,1", help="how many modes to keep, e.g. 7,4,1")
    p.add_argument("--encoder", default="",
                   help="encoder folder (default: runs/features_DATA_SIZE)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    data_cfg = _data_config(args.data, args.image_size, args.channels, args.data_dir)
    load_start = os.getloadavg()
    enc = selfsup.matching_encoder(data_cfg, args.encoder or None)
    nets = [enc, FeatureLayerOnly(enc)]
    if (default_dir(args.data, args.image_size) / META_FILE).is_file():
        nets.append(load_classifier(default_dir(args.data, args.image_size)))
    test, _ = read_split(data_cfg, "test")
    refs = [n.features(test) for n in nets]
    rows = []
    keeps = tuple(int(k) for k in args.modes.split(","))
    for kind, name, images in candidates(data_cfg, [m for m in args.models.split(",") if m],
                                         args.num, keeps):
        row = {"kind": kind, "set": name, "images": len(images)}
        for net, ref in zip(nets, refs, strict=True):
            row.update(metrics.compute(ref, net.features(images), net.name, ("fid", "kid")))
        rows.append(row)
        print(row, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = [k for k in rows[0] if k.startswith(("FID ", "KID ("))]

    def cell(r: dict, c: str) -> str:
        if c.startswith("KID"):  # x 1000, with the std over subsets
            return f"{r[c] * 1e3:.4g} ± {r[c.replace('KID', 'KID std', 1)] * 1e3:.2g}"
        return f"{r[c]:.4g}"
    md = [f"| set (vs {len(test)} test images) | images | "
          + " | ".join(c.replace("KID", "KID x 1000", 1) for c in cols) + " |",
          "|---|---|" + "---|" * len(cols)]
    md += [f"| {r['set']} | {r['images']} | " + " | ".join(cell(r, c) for c in cols) + " |"
           for r in rows]
    checks = {c: {"degradations": ranking_checks(rows, c), "models": model_order(rows, c)}
              for c in cols}
    for c, chk in checks.items():
        md += ["", f"{c}:"] + [f"- {line}" for line in chk["degradations"]]
        if chk["models"]:
            md.append(f"- models, best first: {', '.join(chk['models'])}")
    load_end = os.getloadavg()
    md += ["", f"load average (1, 5, 15 min) at start {tuple(round(x, 2) for x in load_start)}"
           f", at end {tuple(round(x, 2) for x in load_end)}; shared 2-core machine"]
    (out / "table.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"command": " ".join(["python", *sys.argv]),
         "load_average_start": load_start, "load_average_end": load_end,
         "fingerprints": {n.name: n.fingerprint for n in nets}, "checks": checks,
         "rows": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
