"""Package layout: the Triton kernels live in the top-level ``kernels/`` folder but are
installed as ``redi.kernels``, so that no top-level ``kernels`` module of ours shadows the
``kernels`` package that transformers probes for hub kernels. The top-level ``recipes/``
is installed as ``redi.recipes`` (YAML package data) for the same reason."""

from setuptools import find_packages, setup

redi_packages = find_packages(include=["redi", "redi.*"])
kernel_packages = ["redi.kernels"] + [
    "redi.kernels." + sub for sub in find_packages(where="kernels")
]

setup(
    packages=redi_packages + kernel_packages + ["redi.recipes"],
    package_dir={"redi": "redi", "redi.kernels": "kernels", "redi.recipes": "recipes"},
    package_data={"redi.recipes": ["*.yaml"]},
)
