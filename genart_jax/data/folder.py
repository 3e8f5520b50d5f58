"""`genart prepare folder`: a folder of the user's own images as a prepared dataset of raw uint8
records (data/records.py), read with one copy per image.

Every file is decoded with Pillow (EXIF orientation applied, animated images take their first
frame); palette, greyscale, RGBA and CMYK images are converted to the chosen channel count
(transparency composited on white); each image is centre-cropped to a square and resized
(Lanczos) to `size`. Files that are not images, corrupt or truncated are skipped, counted and
listed in `prepare_report.json` beside the data (`strict=True` stops at the first one, naming
it). Subfolders can name the classes (themes). No TensorFlow is needed. The data are written
into a temporary folder renamed when complete, so an interrupted prepare leaves nothing a later
run would read; preparing again the same way is a no-op, another way an error unless
`overwrite`; `prepared.json` records source, size, channels and count for training to check.
A deterministic `test_fraction` of the images (per class with labelled subfolders) is held out
as split "test" (`assign_splits`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from genart_jax.data.records import read_record, write_record, write_split
from genart_jax.data.sources import DataError, _file_lock, resolve_data_dir

REPORT = "prepare_report.json"
TEST_FRACTION = 0.1  # the share of a folder held out as split "test"
SPLIT_RULE = ("per class, the round(test_fraction * n) files with the smallest SHA-256 of their "
              "relative path")


@dataclass
class Scan:
    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 (size, size, channels); raises OSError/ValueError if unreadable."""
    with Image.open(path) as img:
        img.seek(0)
        img.load()  # decodes fully: truncated files fail here
        img = ImageOps.exif_transpose(img)
        if img.mode in ("P", "PA", "LA", "RGBA", "La") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)),
                                        rgba)
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((size, size), Image.Resampling.LANCZOS)
        arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def scan_folder(root: Path, size: int, channels: int, labels_from_subfolders: bool,
                strict: bool) -> Scan:
    """Decode every file under `root` once, sorting them into usable and skipped."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    scan = Scan()
    if labels_from_subfolders:
        scan.classes = sorted({p.relative_to(root).parts[0] for p in files
                               if len(p.relative_to(root).parts) > 1})
    for path in files:
        rel = str(path.relative_to(root))
        if labels_from_subfolders and len(path.relative_to(root).parts) == 1:
            reason = "not in a class subfolder (--labels-from-subfolders)"
        else:
            try:
                load_image(path, size, channels)
                scan.files.append(path)
                scan.labels.append(scan.classes.index(path.relative_to(root).parts[0])
                                   if labels_from_subfolders else 0)
                continue
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                reason = f"{type(e).__name__}: {e}"
        if strict:
            raise DataError(f"unreadable image {path}: {reason} (--strict)")
        scan.skipped.append({"file": rel, "reason": reason})
    if not scan.files:
        raise DataError(f"no readable image in {root} ({len(files)} files, "
                        f"{len(scan.skipped)} skipped); nothing to prepare")
    return scan


def assign_splits(keys: list[str], labels: list[int], test_fraction: float) -> list[str]:
    """"train" or "test" for each example: within each label, the round(fraction * n) examples
    with the smallest SHA-256 of their key (relative path) are "test" (at least one, and one
    left for "train", where the class has two or more). The choice depends on the files' names
    only, not on their order or the machine."""
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    splits = ["train"] * len(keys)
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        members.sort(key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
        n = len(members)
        n_test = round(test_fraction * n)
        if test_fraction > 0 and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        for i in members[:n_test]:
            splits[i] = "test"
    return splits


def _same_preparation(record: dict, root: Path, size: int, channels: int,
                      labels_from_subfolders: bool, test_fraction: float) -> list[str]:
    """How a new request differs from the dataset already prepared (empty: the same)."""
    asked = {"source": str(root), "size": size, "channels": channels,
             "labels_from_subfolders": labels_from_subfolders, "test_fraction": test_fraction}
    return [f"{k} {record.get(k)!r} -> {v!r}" for k, v in asked.items() if record.get(k) != v]


def _write_dataset(final: Path, report: dict, scan: Scan, splits: list[str], size: int,
                   channels: int, labels_from_subfolders: bool) -> None:
    """Decode and write every usable image as raw records, one file per split, into a temporary
    folder, then put it in place of `final` in one rename: an interrupted prepare leaves nothing
    a run would read."""
    tmp = final.parent / f".{final.name}.incomplete"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counts = {}
    for split in ("train", "test"):
        if split not in splits:
            continue
        examples = ((load_image(p, size, channels), label)
                    for p, label, s in zip(scan.files, scan.labels, splits, strict=True)
                    if s == split)
        counts[split] = write_split(tmp / f"{split}.array_record", examples)
    report = dict(report, images=sum(counts.values()), splits=counts)
    (tmp / REPORT).write_text(json.dumps(report, indent=2))
    write_record(tmp, {**report, "count": sum(counts.values()),
                       "labels_from_subfolders": labels_from_subfolders,
                       "splits": {s: {"files": [f"{s}.array_record"], "count": n}
                                  for s, n in counts.items()}})
    if final.exists():
        old = final.parent / f".{final.name}.replaced"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def prepare_folder(path: str | Path, name: str, *, data_dir: str = "", size: int = 64,
                   channels: int = 3, labels_from_subfolders: bool = False,
                   strict: bool = False, test_fraction: float = TEST_FRACTION,
                   overwrite: bool = False) -> dict:
    """Prepare `path` as dataset `name` (splits "train" and, unless `test_fraction` is 0,
    "test") under the data dir; returns the report of the data on disk (also
    prepare_report.json beside it). Preparing again with the same source, size, channels and
    fraction is a no-op; with others a DataError unless `overwrite`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DataError(f"dataset name {name!r} must be lower_snake_case (letters, digits, _)")
    if size < 4 or channels not in (1, 3):
        raise DataError(f"--size must be >= 4 and --channels 1 or 3, got {size}, {channels}")
    root = Path(path).expanduser().resolve()
    out = resolve_data_dir(data_dir)
    final = out / name
    with _file_lock(out / f".{name}.lock"):
        record = read_record(final) if final.exists() else None
        if record is not None and not overwrite:
            diff = _same_preparation(record, root, size, channels, labels_from_subfolders,
                                     test_fraction)
            if diff:
                raise DataError(
                    f"dataset '{name}' in {out} was prepared differently ({'; '.join(diff)}); "
                    f"use another --name, or --overwrite to rebuild it")
            print(f"{name} is already prepared in {out}; nothing to do (--overwrite re-reads "
                  f"the folder)")
            return json.loads((final / REPORT).read_text())
        if final.exists() and record is None and not overwrite:
            raise DataError(f"{final} exists but holds no dataset prepared by this version; "
                            f"use another --name, or --overwrite to replace it")
        if not 0.0 <= test_fraction < 1.0:
            raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        scan = scan_folder(root, size, channels, labels_from_subfolders, strict)
        splits = assign_splits([str(p.relative_to(root)) for p in scan.files], scan.labels,
                               test_fraction)
        report = {"name": name, "source": str(root), "data_dir": str(out), "size": size,
                  "channels": channels, "images": len(scan.files), "skipped": scan.skipped,
                  "classes": scan.classes, "test_fraction": test_fraction,
                  "split_rule": SPLIT_RULE}
        _write_dataset(final, report, scan, splits, size, channels, labels_from_subfolders)
    return json.loads((final / REPORT).read_text())
