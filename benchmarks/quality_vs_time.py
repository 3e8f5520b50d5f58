"""FID/KID/precision/recall of GAN runs at every checkpoint against the wall-clock time at which
the checkpoint was written, for runs started together (so they shared the machine alike).

    python -m benchmarks.quality_vs_time --runs runs/dcgan_digits runs/r3gan_digits \\
        --start 2026-12-02T05:02:00Z --classifier runs/classifier --out benchmarks/results/NAME

Calls `genart eval --metrics fid,kid,pr` per checkpoint and writes results.json, results.md and
quality_vs_time.png under --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path


def checkpoint_times(workdir: Path, start: float) -> list[tuple[int, float]]:
    """(step, seconds after `start` when its checkpoint folder was last written), by step."""
    out = []
    for p in (workdir / "checkpoints").iterdir():
        if p.name.isdigit():
            newest = max(f.stat().st_mtime for f in p.rglob("*") if f.is_file())
            out.append((int(p.name), newest - start))
    return sorted(out)


def evaluate(workdir: Path, step: int, classifier: str, num: int) -> dict:
    """One `genart eval` of checkpoint `step`: its metrics dict."""
    cmd = [sys.executable, "-m", "genart_jax.cli", "eval", "--workdir", str(workdir), "--step",
           str(step), "--metrics", "fid,kid,pr", "--classifier", classifier, "--num", str(num)]
    subprocess.run(cmd, check=True, env=os.environ.copy())
    lines = (workdir / "eval.json").read_text().splitlines()
    return [json.loads(r) for r in lines if json.loads(r).get("step") == step][-1]


def _pick(metrics: dict, prefix: str) -> float | None:
    """The value of the first key of `genart eval`'s result starting with `prefix`."""
    return next((v for k, v in metrics.items() if k.startswith(prefix)), None)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run in sorted({r["run"] for r in rows}):
        mine = [r for r in rows if r["run"] == run]
        t = [r["wall_s"] / 60 for r in mine]
        axes[0].plot(t, [r["fid"] for r in mine], "o-", label=run)
        axes[1].plot(t, [r["precision"] for r in mine], "o-", label=f"{run} precision")
        axes[1].plot(t, [r["recall"] for r in mine], "s--", label=f"{run} recall")
    axes[0].set(xlabel="wall-clock minutes (runs side by side)", ylabel="FID (classifier)")
    axes[1].set(xlabel="wall-clock minutes", ylabel="precision / recall")
    axes[0].legend()
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_time.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--start", required=True, help="UTC time both runs started (ISO 8601)")
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    start = dt.datetime.fromisoformat(args.start.replace("Z", "+00:00")).timestamp()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in args.runs:
        workdir = Path(run)
        for step, wall in checkpoint_times(workdir, start):
            m = evaluate(workdir, step, args.classifier, args.num)
            rows.append({"run": workdir.name, "step": step, "wall_s": round(wall, 1),
                         "fid": _pick(m, "FID "), "kid": _pick(m, "KID ("),
                         "precision": _pick(m, "precision"), "recall": _pick(m, "recall")})
            print(rows[-1], flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| run | step | wall-clock min | FID | KID | precision | recall |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['step']} | {r['wall_s'] / 60:.1f} | {r['fid']:.2f} | "
                     f"{r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
