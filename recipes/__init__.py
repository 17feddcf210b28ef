"""Training recipes (YAML), installed as ``redi.recipes`` so ``redi demo`` finds them from
any install: ``importlib.resources.files("redi.recipes") / "tiny_sft.yaml"``."""
