"""The equal-wall-clock VAE comparison's figures: train bits/dim over training minutes of two or
more workdirs (from their metrics.jsonl: each logged interval's steps x batch / its images_per_sec,
so compile, grids and saves are not counted), and a side-by-side sheet of sample grids.

    python -m benchmarks.vae_comparison --runs hvae=/tmp/cmp/hvae convvae=/tmp/cmp/convvae \
        --grids /tmp/cmp/grids/hvae_t1.0.png /tmp/cmp/grids/convvae.png \
        --out benchmarks/results/cpu-2core-hvae-vs-convvae

The runs themselves: run.sh and eval.sh in that folder (README.md there).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def curve(workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(training minutes, train bits/dim) at each logged step of a run."""
    cfg = json.loads((workdir / "config.json").read_text())
    batch = cfg["train"]["batch_size"]
    dims = cfg["data"]["image_size"] ** 2 * cfg["data"]["channels"]
    t, prev, xs, ys = 0.0, 0, [], []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rate = r.get("images_per_sec")
        if rate:
            t += (r["step"] - prev) * batch / rate
        prev = r["step"]
        bpd = r.get("bits_per_dim")
        if bpd is None and "neg_elbo" in r:
            bpd = r["neg_elbo"] / (dims * math.log(2.0))
        xs.append(t / 60.0)
        ys.append(bpd)
    return np.asarray(xs), np.asarray(ys, float)


def plot(runs: dict[str, Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, workdir in runs.items():
        x, y = curve(workdir)
        last = json.loads(Path(workdir, "metrics.jsonl").read_text().splitlines()[-1])
        ax.plot(x, y, label=f"{name} ({last['step']} steps)")
    ax.set_xlabel("training minutes (compile, grids and saves excluded)")
    ax.set_ylabel("train bits/dim (-ELBO, 8-bit pixels)")
    ax.set_ylim(top=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "bits_per_dim.png"
    fig.savefig(path)
    return path


def sheet(grids: list[Path], out: Path) -> Path:
    """The grids side by side, each titled by its file name."""
    images = [Image.open(g).convert("RGB") for g in grids]
    h = max(i.height for i in images) + 16
    canvas = Image.new("RGB", (sum(i.width for i in images) + 8 * (len(images) - 1), h), "white")
    draw, font, x = ImageDraw.Draw(canvas), ImageFont.load_default(), 0
    for g, im in zip(grids, images, strict=True):
        draw.text((x + 2, 2), g.stem, fill="black", font=font)
        canvas.paste(im, (x, 16))
        x += im.width + 8
    path = out / "samples_side_by_side.png"
    canvas.save(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=WORKDIR ...")
    p.add_argument("--grids", nargs="*", default=[], help="PNG grids to put side by side")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = dict(r.split("=", 1) for r in args.runs)
    print(plot({k: Path(v) for k, v in runs.items()}, out))
    if args.grids:
        print(sheet([Path(g) for g in args.grids], out))


if __name__ == "__main__":
    main()
