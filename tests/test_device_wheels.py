"""The wheels carried to a lent GPU machine (scripts/device_wheels.txt, fetched by
scripts/fetch_device_wheels.sh, installed by benchmarks/device_check.sh): they cover what the
machine's image lacks, and the install picks only those. Nothing here downloads."""

import importlib.metadata
import importlib.util
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_wheels",
                                               ROOT / "scripts" / "device_wheels.py")
dw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dw)

# The device's python: CPython 3.12 on Linux x86_64.
PY312 = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
         "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
         "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def test_genart_jax_dependencies_are_on_the_image_or_carried_at_a_version_they_allow():
    deps = [Requirement(d) for d in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    carried = dw.pinned()
    assert [str(r) for r in deps if canonicalize_name(r.name) not in
            dw.IMAGE_PACKAGES | carried.keys()] == []
    assert [str(r) for r in deps if canonicalize_name(r.name) in carried and not
            r.specifier.contains(Version(carried[canonicalize_name(r.name)]))] == []
    # the ones carried because the image lacks them, not as fallbacks for the image's versions
    assert {"tensorflow-datasets", "array-record", "grain", "ml-collections"} <= (
        carried.keys() - dw.IMAGE_PACKAGES)


def test_what_the_carried_packages_require_is_on_the_image_or_carried():
    """From the metadata of the versions installed here (the pins, where the environment
    follows pyproject), extras included (tensorflow-datasets needs etils[edc,enp,...])."""
    carried = dw.pinned()
    gaps, todo, seen = [], [(n, frozenset()) for n in carried], set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for req in dw.requirements(importlib.metadata.requires(name), extras, PY312):
            dep = canonicalize_name(req.name)
            if dep not in dw.IMAGE_PACKAGES | carried.keys():
                gaps.append(f"{name} needs {req}")
            if req.extras:
                todo.append((dep, frozenset(req.extras)))
    assert gaps == []
    assert ("etils", frozenset({"edc", "enp", "epath", "epy", "etree"})) in seen


def test_the_fetch_script_downloads_cpython_312_manylinux_wheels_of_the_list():
    text = (ROOT / "scripts" / "fetch_device_wheels.sh").read_text()
    for flag in ("--only-binary=:all:", "--python-version 3.12", "--no-deps", "--abi cp312",
                 "device_wheels.txt", "device_wheels.py verify", ".device_wheels"):
        assert flag in text
    assert ".device_wheels/" in (ROOT / ".gitignore").read_text().splitlines()


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)


def test_install_picks_the_absent_and_those_below_what_the_others_need(tmp_path):
    _wheel(tmp_path, "a", "1.0", ["b>=2", "c", "e[x]", 'old; python_version < "3"'])
    _wheel(tmp_path, "b", "2.0", [])
    _wheel(tmp_path, "c", "1.0", [])
    _wheel(tmp_path, "e", "1.0", ['f>=5; extra == "x"', 'g; extra == "y"'])
    _wheel(tmp_path, "f", "5.0", [])
    there = {"b": "1.5", "c": "0.1", "e": "1.0", "f": "4.0"}
    requires = {"e": ['f>=5; extra == "x"', 'g; extra == "y"']}
    chosen, unmet = dw.plan(dw.wheels_in(tmp_path), installed=there.get,
                            installed_requires=lambda n: requires.get(n, []))
    assert chosen == {"a": "absent", "b": "1.5 there; a needs b>=2",
                      "f": "4.0 there; e needs f>=5; extra == \"x\""}
    assert unmet == []
    _wheel(tmp_path, "h", "1.0", ["z>=3", "b<2"])
    chosen, unmet = dw.plan(dw.wheels_in(tmp_path), installed=there.get,
                            installed_requires=lambda n: requires.get(n, []))
    assert unmet == ["h needs b<2, 2.0 there", "h needs z>=3, none there"]
