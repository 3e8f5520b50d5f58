"""Convert the FID Inception-v3 weights once, where torch is installed, into a file genart_jax
loads without pickle: `genart eval --extractor inception --extractor-params OUT`.

    python scripts/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth fid_inception.npz

The input is pytorch-fid's port of the TF FID code's Inception (the file pytorch-fid caches
in ~/.cache/torch/hub/checkpoints/; the port of
http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz). It is read with
`torch.load(weights_only=True)`, which refuses pickled code. OUT ends in .npz or .safetensors;
the tensors keep their PyTorch names and layouts, and the names and shapes are checked against
genart_jax's FIDInceptionV3 before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def convert(src: Path, out: Path) -> int:
    import torch

    from genart_jax.models import inception

    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()
              if k.endswith(("weight", "bias", "running_mean", "running_var"))}
    inception.checked_params(arrays, str(src))  # the FID network's names and shapes, or raise
    if out.suffix == ".safetensors":
        inception.write_safetensors(out, arrays)
    elif out.suffix == ".npz":
        np.savez(out, **arrays)
    else:
        raise inception.WeightsError(f"{out} must end in .npz or .safetensors")
    print(f"wrote {len(arrays)} tensors to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="pytorch-fid's pt_inception-*.pth")
    parser.add_argument("out", type=Path, help="OUT.npz or OUT.safetensors")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from genart_jax.models.inception import WeightsError

    try:
        return convert(args.src, args.out)
    except (OSError, RuntimeError, WeightsError) as e:
        print(f"convert_fid_inception: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
