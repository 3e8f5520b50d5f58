"""`genart prepare folder`: a folder of the user's own images as a project-owned TFDS dataset.

Every file is decoded with Pillow (EXIF orientation applied, animated images take their first
frame); palette, greyscale, RGBA and CMYK images are converted to the chosen channel count
(transparency composited on white); each image is centre-cropped to a square and resized
(Lanczos) to `size`. Files that are not images, corrupt or truncated are skipped, counted and
listed in `prepare_report.json` beside the data (`strict=True` stops at the first one, naming
it). Subfolders can name the classes (themes). Features are `tfds.features.Tensor`, so no
TensorFlow is needed; TFDS writes into a temporary folder renamed when complete, so an
interrupted prepare leaves nothing a later run would read, and preparing again is a no-op.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from genart_jax.data.sources import DataError, _file_lock, resolve_data_dir

REPORT = "prepare_report.json"


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


def _builder_class(name: str, root: Path, scan: Scan, size: int, channels: int):
    import tensorflow_datasets as tfds

    class ImageFolderArt(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """The user's own images, prepared by `genart prepare folder`."""

        VERSION = tfds.core.Version("1.0.0")

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
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (path, label) in enumerate(zip(scan.files, scan.labels, strict=True)):
                yield i, {"image": load_image(path, size, channels), "label": label}

    ImageFolderArt.name = name
    return ImageFolderArt


def prepare_folder(path: str | Path, name: str, *, data_dir: str = "", size: int = 64,
                   channels: int = 3, labels_from_subfolders: bool = False,
                   strict: bool = False) -> dict:
    """Prepare `path` as TFDS dataset `name` (split "train") under the data dir; returns the
    report (also written as prepare_report.json beside the data)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DataError(f"dataset name {name!r} must be lower_snake_case (letters, digits, _)")
    if size < 4 or channels not in (1, 3):
        raise DataError(f"--size must be >= 4 and --channels 1 or 3, got {size}, {channels}")
    root = Path(path).expanduser().resolve()
    out = resolve_data_dir(data_dir)
    report_path = out / name / REPORT
    with _file_lock(out / f".{name}.lock"):
        scan = scan_folder(root, size, channels, labels_from_subfolders, strict)
        builder = _builder_class(name, root, scan, size, channels)(
            data_dir=str(out), file_format="array_record")
        if builder.is_prepared():
            print(f"{name} is already prepared in {out}; nothing to do")
        else:
            builder.download_and_prepare(file_format="array_record")
        report = {"name": name, "source": str(root), "data_dir": str(out), "size": size,
                  "channels": channels, "images": len(scan.files), "skipped": scan.skipped,
                  "classes": scan.classes}
        report_path.write_text(json.dumps(report, indent=2))
    return report
