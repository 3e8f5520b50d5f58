"""The run at a glance, from its files: metrics.jsonl curves (re-read on every call, so the
page follows a trainer writing beside it), sample grids over steps, config, checkpoints and
the JSON results beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_POINTS = 400
RESULT_FILES = ("*.json", "eval*/*.json")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl; a torn or foreign line (a writer mid-line) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def curves(rows: list[dict[str, Any]], max_points: int = MAX_POINTS
           ) -> dict[str, list[list[float]]]:
    """{metric: [[step, value], ...]} of every numeric metric, thinned to about max_points
    evenly spaced rows (the last row always kept)."""
    if len(rows) > max_points:
        stride = -(-len(rows) // max_points)
        rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
    out: dict[str, list[list[float]]] = {}
    for row in rows:
        for k, v in row.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                out.setdefault(k, []).append([row["step"], v])
    return out


def overview(workdir: Path) -> dict[str, Any]:
    """What the run page shows; paths are relative to the workdir (served under /files/)."""
    config = workdir / "config.json"
    ckpt = workdir / "checkpoints"
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) \
        if ckpt.is_dir() else []
    samples = [str(p.relative_to(workdir)) for p in sorted(  # by step, final.png last
        (workdir / "samples").glob("*.png"), key=lambda p: (p.name == "final.png", p.name))]
    results = {}
    for pattern in RESULT_FILES:
        for p in sorted(workdir.glob(pattern)):
            if p.name != "config.json" and p.stat().st_size < 1_000_000:
                try:
                    results[str(p.relative_to(workdir))] = json.loads(p.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
    return {"workdir": str(workdir),
            "config": json.loads(config.read_text()) if config.is_file() else None,
            "curves": curves(read_metrics(workdir / "metrics.jsonl")),
            "samples": samples, "checkpoints": steps, "results": results}
