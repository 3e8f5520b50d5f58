"""`genart prepare folder`: a folder of the user's own images as a project-owned TFDS dataset.

Every file is decoded with Pillow (EXIF orientation applied, animated images take their first
frame); palette, greyscale, RGBA and CMYK images are converted to the chosen channel count
(transparency composited on white); each image is centre-cropped to a square and resized
(Lanczos) to `size`. Files that are not images, corrupt or truncated are skipped, counted and
listed in `prepare_report.json` beside the data (`strict=True` stops at the first one, naming
it). Subfolders can name the classes (themes). Features are `tfds.features.Tensor`, so no
TensorFlow is needed. A deterministic `test_fraction` of the images (per class with labelled
subfolders) is held out as split "test" (`assign_splits`). TFDS writes into a temporary folder
renamed when complete, so an interrupted prepare leaves nothing a later run would read, and
preparing again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from genart_jax.data.sources import DataError, _file_lock, resolve_data_dir

REPORT = "prepare_report.json"
TEST_FRACTION = 0.1


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


def _builder_class(name: str, root: Path, scan: Scan, size: int, channels: int,
                   splits: list[str]):
    import tensorflow_datasets as tfds

    class ImageFolderArt(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """The user's own images, prepared by `genart prepare folder`."""

        VERSION = tfds.core.Version("1.1.0")  # 1.1.0: the held-out "test" split

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Images from {root} ({len(scan.files)} files, {size}x{size}x"
                            f"{channels}); classes: {scan.classes or 'none'}",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=(size, size, channels),
                                                  dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {s: self._generate_examples(s) for s in ("train", "test") if s in splits}

        def _generate_examples(self, split: str):
            for i, (path, label) in enumerate(zip(scan.files, scan.labels, strict=True)):
                if splits[i] == split:
                    yield i, {"image": load_image(path, size, channels), "label": label}

    ImageFolderArt.name = name
    return ImageFolderArt


def prepare_folder(path: str | Path, name: str, *, data_dir: str = "", size: int = 64,
                   channels: int = 3, labels_from_subfolders: bool = False,
                   strict: bool = False, test_fraction: float = TEST_FRACTION) -> dict:
    """Prepare `path` as TFDS dataset `name` (splits "train" and, unless `test_fraction` is 0,
    "test") under the data dir; returns the report (also written as prepare_report.json
    beside the data)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DataError(f"dataset name {name!r} must be lower_snake_case (letters, digits, _)")
    if size < 4 or channels not in (1, 3):
        raise DataError(f"--size must be >= 4 and --channels 1 or 3, got {size}, {channels}")
    root = Path(path).expanduser().resolve()
    out = resolve_data_dir(data_dir)
    report_path = out / name / REPORT
    with _file_lock(out / f".{name}.lock"):
        scan = scan_folder(root, size, channels, labels_from_subfolders, strict)
        splits = assign_splits([str(p.relative_to(root)) for p in scan.files], scan.labels,
                               test_fraction)
        builder = _builder_class(name, root, scan, size, channels, splits)(
            data_dir=str(out), file_format="array_record")
        if builder.is_prepared():
            _check_same_fraction(report_path, test_fraction)
            print(f"{name} is already prepared in {out}; nothing to do")
        else:
            builder.download_and_prepare(file_format="array_record")
        report = {"name": name, "source": str(root), "data_dir": str(out), "size": size,
                  "channels": channels, "images": len(scan.files), "skipped": scan.skipped,
                  "classes": scan.classes, "test_fraction": test_fraction,
                  "split_rule": "per class, the round(test_fraction * n) files with the "
                                "smallest SHA-256 of their relative path",
                  "splits": {s: splits.count(s) for s in ("train", "test") if s in splits}}
        report_path.write_text(json.dumps(report, indent=2))
    return report


def _check_same_fraction(report_path: Path, test_fraction: float) -> None:
    """A dataset already prepared with another held-out fraction is an error, not a no-op."""
    try:
        before = json.loads(report_path.read_text()).get("test_fraction")
    except (OSError, json.JSONDecodeError):
        return
    if before is not None and before != test_fraction:
        raise DataError(f"{report_path.parent.name} was prepared with --test-fraction {before}; "
                        f"delete {report_path.parent} to prepare it with {test_fraction}, or "
                        f"choose another --name")
