"""backend="auto" falls back to the chunked PyTorch path when the Triton kernels fail.

On CPU, ``auto`` is made to prefer Triton (which runs here under TRITON_INTERPRET=1, set by
conftest.py) and the Triton entry points are made to raise the errors a real device gives:
the op must warn once naming the error, return the float64 reference's values and
gradients, keep using PyTorch without warning again, and say so in ``resolved_backend``.
"""

import warnings

import pytest
import torch
from reference import leaf64, token_logprobs64
from triton.runtime.errors import OutOfResources

import redi
from redi.kernels import backend, torch_impl, triton_impl

CPU = torch.device("cpu")


@pytest.fixture
def auto_is_triton(monkeypatch):
    """``auto`` picks Triton on CPU, and no earlier failure is remembered."""
    monkeypatch.setattr(backend, "auto_prefers_triton", lambda device, dtype: True)
    monkeypatch.setitem(backend._state, "failure", None)


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 7, 16, generator=gen).requires_grad_()
    weight = (torch.randn(53, 16, generator=gen) / 4).requires_grad_()
    labels = torch.randint(0, 53, (3, 7), generator=gen)
    labels[0, :2] = -100
    return hidden, weight, labels, torch.randn(3, 7, generator=gen)


def _check_against_reference(hidden, weight, labels, grad):
    x, w = leaf64(hidden), leaf64(weight)
    expected = token_logprobs64(x, w, labels)
    (expected * grad.double()).sum().backward()
    hidden.grad = weight.grad = None
    logp = redi.token_logprobs(hidden, weight, labels, backend="auto")
    (logp * grad).sum().backward()
    torch.testing.assert_close(logp.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden.grad.double(), x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad.double(), w.grad, rtol=1e-5, atol=1e-5)


def _raise(err):
    def fail(*args, **kwargs):
        raise err
    return fail


def test_auto_runs_triton_when_it_works(auto_is_triton, monkeypatch):
    calls = []
    real = triton_impl.forward
    monkeypatch.setattr(triton_impl, "forward", lambda *a: calls.append(1) or real(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_against_reference(*_inputs())
    assert calls and redi.resolved_backend("auto", CPU, torch.float32) == "triton"


@pytest.mark.parametrize("error", [
    OutOfResources(196608, 166912, "shared memory"),
    RuntimeError("Triton Error [CUDA]: device kernel image is invalid"),
    TypeError("unsupported dtype"),
], ids=["out_of_resources", "launch", "dtype"])
def test_failing_triton_falls_back_with_one_warning(auto_is_triton, monkeypatch, error):
    for name in ("forward", "backward", "forward_backward"):
        monkeypatch.setattr(triton_impl, name, _raise(error))
    with pytest.warns(RuntimeWarning, match=type(error).__name__) as caught:
        _check_against_reference(*_inputs())
    assert len([w for w in caught if "Triton kernels failed" in str(w.message)]) == 1
    with warnings.catch_warnings():  # later calls: PyTorch, silently
        warnings.simplefilter("error")
        _check_against_reference(*_inputs(seed=1))
        hidden, weight, labels, coef = _inputs(seed=2)
        total = redi.weighted_logprob_sum(hidden, weight, labels, coef, backend="auto")
    expected = (token_logprobs64(hidden, weight, labels) * coef.double()).sum()
    torch.testing.assert_close(total.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    used = redi.resolved_backend("auto", CPU, torch.float32)
    assert used.startswith(f"torch (Triton failed: {type(error).__name__}"), used
    assert redi.resolved_backend("torch", CPU, torch.float32) == "torch"


def test_failure_in_backward_only_still_gives_exact_gradients(auto_is_triton, monkeypatch):
    forward_calls = []
    real = triton_impl.forward
    monkeypatch.setattr(triton_impl, "forward", lambda *a: forward_calls.append(1) or real(*a))
    monkeypatch.setattr(triton_impl, "backward", _raise(OutOfResources(1, 0, "registers")))
    with pytest.warns(RuntimeWarning, match="OutOfResources"):
        _check_against_reference(*_inputs())
    assert forward_calls  # the forward ran on Triton, its lse fed PyTorch's backward


def test_out_of_memory_is_raised_not_hidden(auto_is_triton, monkeypatch):
    monkeypatch.setattr(triton_impl, "forward", _raise(torch.OutOfMemoryError("no memory")))
    monkeypatch.setattr(torch_impl, "forward", _raise(AssertionError("must not fall back")))
    hidden, weight, labels, _ = _inputs()
    with pytest.raises(torch.OutOfMemoryError):
        redi.token_logprobs(hidden, weight, labels, backend="auto")
    assert backend.failure() is None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_auto_on_a_gpu_runs_triton_without_falling_back(dtype):
    """On a real device the kernels must compile and launch: a silent fallback would hide
    a Triton failure behind slower PyTorch."""
    hidden, weight, labels, grad = (t.cuda() for t in _inputs())
    hidden = hidden.to(dtype).detach().requires_grad_()
    weight = weight.to(dtype).detach().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        (redi.token_logprobs(hidden, weight, labels) * grad).sum().backward()
        redi.weighted_logprob_sum(hidden, weight, labels, grad).backward()
    assert backend.failure() is None
    assert redi.resolved_backend("auto", "cuda", dtype) == "triton"
