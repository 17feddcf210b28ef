"""The tested environment is pinned: ``requirements/lock-cpu.txt`` names every package at one
exact version, ``make test``/``make demo``/CI install from it, and pyproject keeps ranges."""

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock-cpu.txt"
MUST_PIN = ("transformers", "tokenizers", "datasets", "huggingface-hub", "kernels",
            "liger-kernel", "trl", "peft", "torch", "triton", "safetensors", "accelerate",
            "pytest", "pip", "setuptools")


def locked() -> dict[str, str]:
    pins = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{LOCK.name}:{number}: not name==version: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{LOCK.name}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def test_lock_pins_every_package_exactly():
    pins = locked()
    for name in MUST_PIN:
        assert name in pins, f"{name} is not in {LOCK.name}"
    assert pins["torch"] == "2.13.0+cpu" and pins["triton"] == "3.7.1"
    assert "redi" not in pins


def test_pyproject_keeps_ranges_not_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    for text in requirements:
        for spec in Requirement(text).specifier:
            assert spec.operator not in ("==", "==="), f"pyproject pins {text!r}"


def test_every_dependency_of_the_dev_install_is_locked():
    """A package the dev extras pull but the lock lacks would float with upstream."""
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in project["optional-dependencies"]:
        if extra == "gpu":  # flash-attn: GPU machines only
            continue
        for text in project["optional-dependencies"][extra]:
            name = canonicalize_name(Requirement(text).name)
            assert name == "redi" or name in pins, f"extra {extra!r} needs {name}, not locked"


def test_the_commands_install_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK ?= requirements/lock-cpu.txt" in makefile
    install = makefile.split("$(STAMP): ", 1)[1].split("\n\n", 1)[0]
    assert "-r $(LOCK)" in install and "--no-deps" in install
    assert re.search(r"^test: \$\(STAMP\)", makefile, re.M)
    assert re.search(r"^demo: \$\(STAMP\)", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "requirements/lock-cpu.txt" in (ROOT / "bench" / "gpu.sh").read_text()


@pytest.mark.skipif(not Path(sys.prefix, ".installed").exists(),
                    reason="not the environment `make install` built")
def test_this_environment_is_the_lock():
    mismatched = {}
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert not mismatched, f"installed versions differ from {LOCK.name}: {mismatched}"
