"""The public entry points carry type annotations (mypy checks their bodies in ``make lint``),
and a type checker sees every public name of ``redi`` behind its lazy ``__getattr__``."""

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest

import redi
import redi.integrations.transformers as hf_adapters
from redi.integrations.transformers import head_inputs

ENTRY_POINTS = [redi.token_logprobs, redi.weighted_logprob_sum, redi.sequence_group_loss,
                redi.resolved_backend, redi.pair_logprobs, redi.FusedLinearPreferenceLoss.forward,
                redi.FusedLinearSFTLoss.forward, head_inputs]


@pytest.mark.parametrize("function", ENTRY_POINTS, ids=lambda f: f.__qualname__)
def test_entry_point_is_fully_annotated(function):
    signature = inspect.signature(function)
    untyped = [name for name, p in signature.parameters.items()
               if name != "self" and p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{function.__qualname__}: no annotation for {untyped}"
    assert signature.return_annotation is not inspect.Signature.empty


def _type_checking_imports():
    """public name -> (module, attribute or None) of ``redi/__init__.py``'s TYPE_CHECKING
    block."""
    tree = ast.parse(Path(redi.__file__).read_text())
    [block] = [node for node in tree.body if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            name = alias.asname or alias.name
            if node.module == "redi":  # a submodule: redi.<name>
                seen[name] = (f"redi.{alias.name}", None)
            else:
                seen[name] = (node.module, alias.name)
    return seen


def test_type_checkers_see_every_public_name():
    assert _type_checking_imports() == redi._EXPORTS


def test_package_ships_its_annotations():
    assert (Path(redi.__file__).parent / "py.typed").is_file()  # PEP 561



def test_old_public_names_still_work_for_one_release_with_a_warning():
    with pytest.warns(DeprecationWarning, match="redi.pair_logprobs"):
        assert redi.pair_logps is redi.pair_logprobs
    assert "pair_logps" not in redi.__all__
    for old, names in (("redi.hf_head", ["HeadError", "head_inputs", "logit_softcap",
                                         "output_head"]),
                       ("redi.model_logits", ["model_softcap", "with_model_softcap"])):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match="redi.integrations.transformers"):
            module = importlib.import_module(old)
        assert all(getattr(module, name) is getattr(hf_adapters, name) for name in names)
