"""bench/gpu.sh on a machine without a CUDA device: it says so and exits 2, running nothing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                                reason="a real nvidia-smi is here: run bench/gpu.sh itself")


def _dry_run(tmp_path, path):
    env = dict(os.environ, PATH=path, REDI_GPU_VENV=str(tmp_path / "venv"),
               REDI_GPU_OUT=str(tmp_path / "out"))
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_without_nvidia_smi_exits_2(tmp_path):
    done = _dry_run(tmp_path, os.environ["PATH"])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device" in done.stderr
    assert not (tmp_path / "venv").exists() and not (tmp_path / "out").exists()


def test_nvidia_smi_listing_no_gpu_exits_2(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    (fake / "nvidia-smi").chmod(0o755)
    done = _dry_run(tmp_path, f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device" in done.stderr
    assert not (tmp_path / "venv").exists()
