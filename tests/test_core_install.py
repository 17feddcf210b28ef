"""The core install is torch + triton: the public library works without any extra.

A subprocess blocks every optional package (an import of one raises ImportError, as in a
venv that lacks it), then uses each public name; the package metadata lists only torch and
triton as unconditional requirements.
"""

import subprocess
import sys
import textwrap
from importlib.metadata import requires

OPTIONAL = ("transformers", "datasets", "tokenizers", "safetensors", "yaml", "tqdm",
            "liger_kernel", "math_verify", "matplotlib", "trl", "peft", "accelerate")

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked optional package {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import torch
    import redi

    torch.manual_seed(0)
    b, t, h, v = 2, 5, 8, 13
    hidden = torch.randn(2 * b, t, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    labels = torch.randint(0, v, (2 * b, t))
    labels[:, 0] = -100
    for loss_fn in (redi.FusedLinearREDILoss(), redi.FusedLinearSimPOLoss(),
                    redi.FusedLinearSFTLoss()):
        loss, _ = loss_fn(weight, hidden, labels)
        loss.backward()
    ref = torch.zeros(b)
    loss, _ = redi.FusedLinearDPOLoss()(weight, hidden, labels, ref_chosen_logps=ref,
                                        ref_rejected_logps=ref)
    loss.backward()
    redi.token_logprobs(hidden, weight, labels).sum().backward()
    redi.weighted_logprob_sum(hidden, weight, labels, torch.ones(2 * b, t)).backward()
    redi.pair_logprobs(weight, hidden, labels)
    from redi.integrations.transformers import head_inputs, model_softcap  # noqa: F401
    redi.functional.redi_loss(torch.tensor([-3.0]), torch.tensor([-4.0]),
                              torch.tensor([2.0]), torch.tensor([3.0]))
    assert weight.grad.abs().sum() > 0 and hidden.grad.abs().sum() > 0
    import redi.plotting  # matplotlib is imported on the first figure, not here
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("core ok")
""")


def test_public_api_works_without_optional_packages():
    result = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(OPTIONAL)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "core ok" in result.stdout


def test_core_requirements_are_torch_and_triton():
    core = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip()
                  for r in requires("redi") if "extra ==" not in r)
    assert core == ["torch", "triton"]
