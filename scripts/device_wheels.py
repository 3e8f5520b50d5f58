"""The Python packages a lent GPU machine lacks, carried as wheels (it has no network).

    python3 scripts/device_wheels.py verify FOLDER               # here, after the download
    python3 scripts/device_wheels.py install FOLDER --target DIR  # there (device_check.sh)
    python3 scripts/device_wheels.py check                       # import what the check needs

`scripts/fetch_device_wheels.sh` downloads the wheels named in `scripts/device_wheels.txt` into
FOLDER here. `install` puts into DIR (`pip install --no-index --no-deps --target`) each wheel of
FOLDER whose distribution is not installed, and each whose installed version is below what the
carried packages require, and nothing else; DIR then goes first on PYTHONPATH. It prints what it
installed and why, and exits 1 with one line if a requirement stays unmet. `check` imports the
modules `benchmarks/device_check.py` needs and exits 1 with one line naming those that fail.
Needs only the standard library and `packaging` (or pip's copy of it).
"""

from __future__ import annotations

import argparse
import email.parser
import importlib
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "scripts" / "device_wheels.txt"
FETCH = "bash scripts/fetch_device_wheels.sh"
FOLDER = ".device_wheels"

# The distributions on the nvidia-h100-x1 / nvidia-h200 image ('cuda'), as the device docs
# (KINDS.md, "Python packages already there") listed them, read on such a machine on 2026-11-17.
IMAGE_PACKAGES = frozenset(canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())


def pinned(path: Path = LIST) -> dict[str, str]:
    """`device_wheels.txt` as {canonical name: version}."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise ValueError(f"{path.name}: {line!r} is not NAME==VERSION")
        key = canonicalize_name(name.strip())
        if key in out:
            raise ValueError(f"{path.name}: {name.strip()} twice")
        out[key] = version.strip()
    return out


def requirements(requires: list[str] | None, extras: frozenset[str] = frozenset(),
                 env: dict[str, str] | None = None) -> list[Requirement]:
    """The Requires-Dist lines that apply: with no extras, those whose marker holds without
    one; with extras, only those the extras add."""
    out = []
    for line in requires or []:
        req = Requirement(line)
        if req.marker is None:
            if not extras:
                out.append(req)
            continue
        by_extra = "extra" in str(req.marker)
        if extras and by_extra:
            if any(req.marker.evaluate({**(env or {}), "extra": e}) for e in extras):
                out.append(req)
        elif not extras and not by_extra and req.marker.evaluate({**(env or {}), "extra": ""}):
            out.append(req)
    return out


class Wheel:
    """One wheel file: its distribution's name, version and Requires-Dist lines."""

    def __init__(self, path: Path):
        self.path = path
        name, version = path.name.split("-")[:2]
        self.name, self.version = canonicalize_name(name), version
        with zipfile.ZipFile(path) as z:
            meta = next(n for n in z.namelist()
                        if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            msg = email.parser.Parser().parsestr(z.read(meta).decode())
        self.requires = msg.get_all("Requires-Dist") or []


def wheels_in(folder: Path) -> dict[str, Wheel]:
    out: dict[str, Wheel] = {}
    for path in sorted(folder.glob("*.whl")):
        w = Wheel(path)
        if w.name in out:
            raise SystemExit(f"device wheels: FAILED: two versions of {w.name} in {folder} "
                             f"({out[w.name].path.name}, {path.name}); run {FETCH} again")
        out[w.name] = w
    return out


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def plan(wheels: dict[str, Wheel], installed=_installed,
         installed_requires=importlib.metadata.requires) -> tuple[dict[str, str], list[str]]:
    """Which wheels to install ({name: why}) and the requirements no choice meets. Starts from
    the wheels whose distribution is absent, then adds each carried wheel whose installed
    version fails a requirement of a carried package (and meets it), until nothing changes."""
    chosen = {n: "absent" for n in wheels if installed(n) is None}
    while True:
        unmet, added = [], False
        seen: set[tuple[str, frozenset[str]]] = set()
        todo = [(n, frozenset()) for n in wheels if n in chosen or installed(n) is not None]
        while todo:
            name, extras = todo.pop()
            if (name, extras) in seen:
                continue
            seen.add((name, extras))
            if name in chosen:
                requires = wheels[name].requires
            else:
                try:
                    requires = installed_requires(name)
                except importlib.metadata.PackageNotFoundError:
                    requires = []
            for req in requirements(requires, extras):
                dep = canonicalize_name(req.name)
                have = wheels[dep].version if dep in chosen else installed(dep)
                ok = have is not None and req.specifier.contains(Version(have), prereleases=True)
                if not ok and dep in wheels and dep not in chosen and req.specifier.contains(
                        Version(wheels[dep].version), prereleases=True):
                    chosen[dep] = f"{have} there; {name} needs {req}"
                    added = True
                elif not ok:
                    unmet.append(f"{name} needs {req}, "
                                 f"{'none' if have is None else have} there")
                if dep in wheels:  # the image's own requirements are not ours to check
                    todo.append((dep, frozenset()))
                if req.extras:
                    todo.append((dep, frozenset(req.extras)))
        if not added:
            return chosen, sorted(set(unmet))


def install(folder: Path, target: Path) -> int:
    wheels = wheels_in(folder)
    if not wheels:
        print(f"device wheels: none in {folder}", flush=True)
        return 0
    chosen, unmet = plan(wheels)
    if chosen:
        print(f"device wheels: installing {len(chosen)} of {len(wheels)} from {folder} into "
              f"{target}: " + ", ".join(f"{n}=={wheels[n].version} ({why})"
                                       for n, why in sorted(chosen.items())), flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--upgrade",
               "--target", str(target), *(str(wheels[n].path) for n in sorted(chosen))]
        rc = subprocess.run(cmd).returncode
        if rc:
            print(f"device wheels: FAILED: pip install --target {target} returned {rc}",
                  file=sys.stderr)
            return 1
    else:
        print(f"device wheels: all {len(wheels)} in {folder} are installed already", flush=True)
    if unmet:
        print(f"device wheels: FAILED: unmet requirements: {'; '.join(unmet)}", file=sys.stderr)
        return 1
    return 0


def check(modules: list[str]) -> int:
    """Import each module (not just find it: a protobuf too old for a package's generated code
    fails only on import)."""
    sys.path.insert(0, str(ROOT))  # genart_jax and benchmarks from the source tree
    if not modules:
        from benchmarks.device_check import FOR_DATA, FOR_PIPELINE, NEEDED

        # tensorflow_metadata's protos: generated code newer than the protobuf runtime fails
        # here, where `import tensorflow_datasets` alone still passes
        modules = list(dict.fromkeys([*NEEDED, *FOR_DATA, *FOR_PIPELINE, "genart_jax.cli",
                                      "tensorflow_metadata.proto.v0.schema_pb2"]))
    failed = []
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception as e:  # noqa: BLE001 - any failure to import is the answer
            failed.append(f"{m} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if failed:
        print(f"device_check: FAILED: cannot import {', '.join(failed)}; here run {FETCH} and "
              f"name {FOLDER} in the device call's carry", file=sys.stderr)
        return 1
    return 0


def verify(folder: Path) -> int:
    """One wheel per line of device_wheels.txt, at its version, each for CPython 3.12 on
    manylinux x86_64 or pure; prints the folder's size."""
    want, have = pinned(), wheels_in(folder)
    bad = [f"{n}=={v}: {'missing' if n not in have else have[n].path.name}"
           for n, v in want.items() if n not in have or have[n].version != v]
    bad += [f"{w.path.name}: not in {LIST.name}" for n, w in have.items() if n not in want]
    for w in have.values():
        tags = w.path.name[:-4].split("-")[-3:]
        if not (tags[1] == "none" and tags[2] == "any" or tags[2].startswith("manylinux")
                and tags[2].endswith("x86_64") and tags[1] in ("cp312", "abi3")):
            bad.append(f"{w.path.name}: not for CPython 3.12 on manylinux x86_64")
    size = sum(w.path.stat().st_size for w in have.values())
    if bad:
        print(f"device wheels: FAILED: {'; '.join(bad)}", file=sys.stderr)
        return 1
    print(f"device wheels: {len(have)} wheels, {size / 2**20:.1f} MiB in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("install")
    s.add_argument("folder", type=Path)
    s.add_argument("--target", type=Path, required=True)
    s = sub.add_parser("check")
    s.add_argument("modules", nargs="*")
    s = sub.add_parser("verify")
    s.add_argument("folder", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "install":
        return install(a.folder, a.target)
    if a.cmd == "check":
        return check(a.modules)
    return verify(a.folder)


if __name__ == "__main__":
    sys.exit(main())
