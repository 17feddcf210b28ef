"""No top-level ``kernels`` of ours: run from the checkout root, as a user runs ``python -m``,
every name resolves to what it should (setup.py says why the folders have no ``__init__.py``).

Each check starts a new interpreter with the checkout root as its working directory, so the
root is first on ``sys.path`` as it is for ``python -m pytest``, ``python -m redi.cli`` and
``torchrun -m redi.cli``.
"""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_from_root(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_kernels_folders_are_not_regular_packages():
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert not (ROOT / "recipes" / "__init__.py").exists()
    assert (ROOT / "redi" / "kernels").resolve() == (ROOT / "kernels").resolve()


def test_hugging_face_kernels_wins_from_the_checkout_root():
    pytest.importorskip("kernels")  # Hugging Face's package, pulled in by transformers
    result = run_from_root("-c", "import importlib.util, kernels; "
                                 "print(importlib.util.find_spec('kernels').origin); "
                                 "print(kernels.__file__)")
    assert result.returncode == 0, result.stderr[-2000:]
    for origin in result.stdout.split():
        assert origin != "None", "a namespace package won: Hugging Face's kernels is shadowed"
        assert not Path(origin).resolve().is_relative_to(ROOT / "kernels"), origin


def test_transformers_models_and_redi_import_from_the_checkout_root():
    pytest.importorskip("transformers")
    result = run_from_root("-c", "from transformers import Qwen2ForCausalLM, LlamaForCausalLM; "
                                 "import redi, redi.kernels.linear_logprobs as op; "
                                 "assert redi.token_logprobs is op.token_logprobs; print('ok')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_cli_help_from_the_checkout_root():
    result = run_from_root("-m", "redi.cli", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "commands:" in result.stdout and "train" in result.stdout


def collected(*command):
    result = subprocess.run([*command, "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    match = re.search(r"(\d+) tests? collected", result.stdout)
    assert match, result.stdout[-2000:]
    return int(match.group(1))


@pytest.mark.slow
def test_python_m_pytest_collects_what_pytest_collects():
    pytest_script = Path(sys.executable).with_name("pytest")
    if not pytest_script.exists():
        pytest.skip("no pytest script beside this interpreter")
    via_module = collected(sys.executable, "-m", "pytest")
    assert via_module == collected(str(pytest_script))
    assert via_module > 500


@pytest.mark.slow
def test_wheel_installs_kernels_and_recipes_under_redi(tmp_path):
    pytest.importorskip("setuptools")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("redi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "redi/kernels/linear_logprobs.py" in names
    assert "redi/kernels/triton_impl.py" in names
    assert "redi/recipes/tiny_redi.yaml" in names
    assert "redi/py.typed" in names  # PEP 561: type checkers read the annotations
    assert not [n for n in names if n.startswith(("kernels/", "recipes/"))]
    assert not [n for n in names if "__pycache__" in n]
