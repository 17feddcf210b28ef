"""Package layout. The Triton kernels live in the top-level ``kernels/`` folder (and the YAML
recipes in ``recipes/``) but install as ``redi.kernels`` (``redi.recipes``): ``redi/kernels`` and
``redi/recipes`` are symbolic links to those folders, and the folders have no ``__init__.py``.

Why no ``__init__.py``: Python puts the working directory first on ``sys.path`` for
``python -m ...`` and ``python -c``, so a top-level ``kernels/__init__.py`` would shadow Hugging
Face's ``kernels`` package, which transformers imports. A folder without one is only a
namespace portion, and a regular package of that name on ``sys.path`` always wins over it.
``redi.kernels`` is therefore a namespace subpackage of ``redi``, the same in a checkout, an
editable install and a wheel (the links are followed when the wheel is built); its public
entries are re-exported by ``redi`` itself. ``tests/test_layout.py`` guards this.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["redi", "redi.*"], exclude=["*.__pycache__"]),
)
