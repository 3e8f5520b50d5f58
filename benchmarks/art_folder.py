"""Write a folder of structured "art" images (PNG, RGB) for comparing generative models on
something richer than digits and cheaper than real photographs.

Each image: a smooth two-colour linear gradient background drawn from one of a few palettes,
then 1-3 shapes (filled discs, squares, triangles, rings; plain, striped or checkered) in
colours of the same palette at random positions, sizes and angles, each with a soft drop
shadow. Edges are anti-aliased (one-pixel ramps of a signed distance), so the images are
smooth apart from the shape outlines: not noise. Image i depends only on (seed, i).
Pure NumPy + Pillow.

The 32 px RGB data set of the HVAE vs conv VAE comparison (4000 images, 3600 train / 400 test):

    python -m benchmarks.art_folder --out /tmp/art32/images --images 4000 --seed 0
    genart prepare folder /tmp/art32/images --name art32 --size 32 --channels 3 \\
        --test-fraction 0.1 --data_dir /tmp/art32/tfds

then train with `--config.data.name=art32 --config.data.data_dir=/tmp/art32/tfds` (or
TFDS_DATA_DIR=/tmp/art32/tfds), `data.image_size=32`, `data.channels=3`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

# Five colours each (RGB 0-255): background gradients and shapes draw from one palette.
PALETTES = np.array([
    [[38, 70, 83], [42, 157, 143], [233, 196, 106], [244, 162, 97], [231, 111, 81]],
    [[13, 27, 42], [27, 38, 59], [65, 90, 119], [119, 141, 169], [224, 225, 221]],
    [[255, 190, 11], [251, 86, 7], [255, 0, 110], [131, 56, 236], [58, 134, 255]],
    [[0, 48, 73], [214, 40, 40], [247, 127, 0], [252, 191, 73], [234, 226, 183]],
    [[96, 108, 56], [40, 54, 24], [254, 250, 224], [221, 161, 94], [188, 108, 37]],
    [[205, 180, 219], [255, 200, 221], [255, 175, 204], [189, 224, 254], [162, 210, 255]],
    [[17, 17, 17], [68, 68, 68], [136, 136, 136], [204, 204, 204], [240, 240, 240]],
    [[0, 95, 115], [10, 147, 150], [148, 210, 189], [238, 155, 0], [174, 32, 18]],
], np.float32)

SHAPES = ("disc", "square", "triangle", "ring")
TEXTURES = ("plain", "plain", "stripes", "checker")  # plain twice as often


def _sdf(kind: str, x: np.ndarray, y: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of a shape of radius r at the origin, rotated."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    if kind == "disc":
        return np.hypot(u, v) - r
    if kind == "ring":
        return np.abs(np.hypot(u, v) - 0.75 * r) - 0.25 * r
    if kind == "square":
        h = 0.8 * r  # half side: the square's area near the disc's
        q = np.stack([np.abs(u) - h, np.abs(v) - h])
        return np.hypot(*np.maximum(q, 0)) + np.minimum(q.max(0), 0)
    # triangle: equilateral, circumradius r; the largest half-plane distance (exact inside)
    normals = [(np.cos(a), np.sin(a)) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3,
                                                np.pi / 2 + 4 * np.pi / 3)]
    return np.max([nx * u + ny * v - 0.5 * r for nx, ny in normals], axis=0)


def make_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One image, uint8 (size, size, 3)."""
    pal = PALETTES[rng.integers(len(PALETTES))]
    y, x = np.mgrid[:size, :size].astype(np.float32) + 0.5
    # background: a linear gradient between two palette colours along a random direction
    a, b = rng.choice(len(pal), 2, replace=False)
    theta = rng.uniform(0, 2 * np.pi)
    t = ((x - size / 2) * np.cos(theta) + (y - size / 2) * np.sin(theta)) / size + 0.5
    t = np.clip(t, 0, 1)[..., None]
    img = (1 - t) * pal[a] + t * pal[b]
    used = {a, b}
    for _ in range(rng.integers(1, 4)):
        kind = SHAPES[rng.integers(len(SHAPES))]
        texture = TEXTURES[rng.integers(len(TEXTURES))]
        r = rng.uniform(0.12, 0.3) * size
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        angle = rng.uniform(0, 2 * np.pi)
        # a colour unlike the background's where the palette allows
        free = [i for i in range(len(pal)) if i not in used] or list(range(len(pal)))
        fg = pal[rng.choice(free)]
        # soft shadow: the shape's distance, offset down-right, with a wide ramp
        off = size * 0.04
        d = _sdf(kind, x - cx - off, y - cy - off, r, angle)
        shadow = np.clip(0.5 - d / (size * 0.06), 0, 1)[..., None] * 0.35
        img = img * (1 - shadow)
        d = _sdf(kind, x - cx, y - cy, r, angle)
        alpha = np.clip(0.5 - d, 0, 1)[..., None]  # one-pixel anti-aliased edge
        colour = np.broadcast_to(fg, img.shape)
        if texture != "plain":
            fg2 = pal[rng.choice([i for i in range(len(pal)) if not np.array_equal(pal[i], fg)])]
            period = rng.uniform(0.08, 0.16) * size
            c, s = np.cos(angle), np.sin(angle)
            u, v = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
            if texture == "stripes":
                w = np.sin(2 * np.pi * u / period)
            else:
                w = np.sin(np.pi * u / period * 2) * np.sin(np.pi * v / period * 2)
            m = np.clip(0.5 + w * period / 4, 0, 1)[..., None]  # anti-aliased stripe edges
            colour = m * fg + (1 - m) * fg2
        img = (1 - alpha) * img + alpha * colour
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def image_rng(seed: int, i: int) -> np.random.Generator:
    """The generator of image i: independent of how many images are written."""
    return np.random.default_rng([seed, i])


def write_folder(out: str | Path, images: int, seed: int = 0, size: int = 64,
                 progress: bool = True) -> Path:
    """Write `images` PNGs art_00000.png ... into `out` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(images - 1)))
    for i in tqdm(range(images), disable=not progress, unit="img", desc="art"):
        Image.fromarray(make_image(image_rng(seed, i), size)).save(
            out / f"art_{i:0{width}d}.png")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the PNG files (created)")
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="side in pixels (default 64)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = write_folder(args.out, args.images, args.seed, args.size, not args.no_progress)
    print(f"wrote {args.images} images ({args.size}x{args.size} RGB) to {out}")


if __name__ == "__main__":
    main()
