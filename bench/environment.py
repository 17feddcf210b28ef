"""The environment a benchmark ran in: device, library versions, commit, CPU, threads."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
_PACKAGES = ("torch", "triton", "transformers", "liger-kernel", "redi")


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device == "cuda" else "cpu"


def device_slug(device: str) -> str:
    """File-name form of the device name: "cpu", "nvidia-h100-80gb-hbm3", ..."""
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def environment(device: str) -> dict:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_name(device),
        "cuda": torch.version.cuda if device == "cuda" else None,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),  # 1, 5, 15 min: other jobs on the machine
        "python": platform.python_version(),
        **{package.replace("-", "_"): _version(package) for package in _PACKAGES},
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
    }
