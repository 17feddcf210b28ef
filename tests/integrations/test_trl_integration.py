"""redi.integrations.trl: the fused REDI / DPO / SimPO losses in a TRL DPOTrainer-compatible
trainer, checked against full float64 logits, against TRL's own DPO and CPO-SimPO losses,
across processes (DDP on gloo), and by training on the built-in task."""

import copy
import importlib.util
import logging
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from redi import functional as LF

pytest.importorskip("trl")

REPO = Path(__file__).parents[2]
WORKER = REPO / "tests" / "workers" / "trl_step_grads.py"
spec = importlib.util.spec_from_file_location("trl_step_grads", WORKER)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)

from redi.data.tokenizer import load_tokenizer  # noqa: E402
from redi.integrations.trl import REDITrainer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def make_trainer(tmp_path, tokenizer, *, tied=False, conversational=True, n=8, **config):
    model = worker.tiny_model(len(tokenizer), tied=tied)
    args = worker.trainer_args(str(tmp_path), **config)
    return REDITrainer(model, args=args, train_dataset=worker.builtin_pairs(n, conversational),
                       processing_class=tokenizer)


def first_batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def full_logit_tokens(model, batch):
    """float64 completion token log-probs (0 elsewhere) and the completion mask, from the
    full logits."""
    logits = model(input_ids=batch["input_ids"],
                   attention_mask=batch["attention_mask"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].bool()
    return logp.gather(-1, targets[..., None]).squeeze(-1) * mask, mask


def full_logit_sums(model, batch):
    """float64 summed completion log-probs and lengths per row, from the full logits."""
    token, mask = full_logit_tokens(model, batch)
    return token.sum(-1), mask.sum(-1).double()


def reference_loss(model, batch, loss_type, args, ref_model=None):
    sums, lengths = full_logit_sums(model, batch)
    b = sums.shape[0] // 2
    lp_w, lp_l, len_w, len_l = sums[:b], sums[b:], lengths[:b], lengths[b:]
    if loss_type == "redi":
        if args.negative_floor is not None:  # rejected tokens clamped at log tau, no gradient
            token, mask = full_logit_tokens(model, batch)
            floor = torch.full_like(token, math.log(args.negative_floor))
            lp_l = (torch.maximum(token, floor) * mask).sum(-1)[b:]
        return LF.redi_loss(lp_w, lp_l, len_w, len_l, alpha=args.alpha,
                            chosen_coef=args.chosen_coef,
                            neg_reweight_gamma=args.neg_reweight_gamma)[0]
    if loss_type == "simpo":
        return LF.simpo_loss(lp_w, lp_l, len_w, len_l, beta=args.beta, gamma=args.simpo_gamma)[0]
    with torch.no_grad():
        ref_sums, _ = full_logit_sums(ref_model, batch)
    return LF.dpo_loss(lp_w, lp_l, ref_sums[:b], ref_sums[b:], beta=args.beta)[0]


def assert_same_grads(model, reference, rtol=1e-4):
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        scale = q.grad.abs().max().item()
        err = (p.grad.double() - q.grad).abs().max().item()
        assert scale > 0 and err <= rtol * scale, (name, err, scale)


@pytest.mark.parametrize("loss_type,extra,tied,conversational", [
    ("redi", {"alpha": 0.6, "chosen_coef": 1.5}, False, True),
    ("redi", {"neg_reweight_gamma": 0.3}, True, False),
    ("redi", {"negative_floor": 0.0031}, False, True),
    ("sigmoid", {"beta": 0.5}, False, True),
    ("simpo", {"beta": 2.0, "simpo_gamma": 0.7}, True, True),
])
def test_first_step_loss_and_grads_equal_full_logits_float64(tmp_path, tokenizer, loss_type,
                                                             extra, tied, conversational):
    trainer = make_trainer(tmp_path, tokenizer, tied=tied, conversational=conversational,
                           loss_type=loss_type, **extra)
    model = trainer.model.double()  # float64 through the fused op too: differences are its own
    if trainer.ref_model is not None:
        trainer.ref_model.double()
    reference = copy.deepcopy(model)
    frozen = copy.deepcopy(reference)
    if loss_type == "sigmoid":  # the reference must differ from the policy to test it
        with torch.no_grad():
            for p in list(model.parameters()) + list(reference.parameters()):
                p.add_(0.05 * torch.randn_like(p).sign() * p.abs().mean())
        # same perturbation on both: re-copy the policy's weights into the float64 copy
        reference.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    batch = first_batch(trainer)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    expected = reference_loss(reference, batch, loss_type, trainer.args, ref_model=frozen)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert_same_grads(model, reference, rtol=1e-6)


def test_dpo_loss_and_grads_equal_trl_dpo_trainer(tmp_path, tokenizer):
    from trl import DPOConfig, DPOTrainer

    ours = make_trainer(tmp_path / "ours", tokenizer, loss_type="sigmoid", beta=0.3)
    theirs_model = worker.tiny_model(len(tokenizer))
    with torch.no_grad():  # policy != reference
        for p, q in zip(ours.model.parameters(), theirs_model.parameters()):
            p.mul_(1.1)
            q.mul_(1.1)
    args = DPOConfig(str(tmp_path / "trl"), beta=0.3, report_to=[], use_cpu=True,
                     dataset_num_proc=None, per_device_train_batch_size=4)
    theirs = DPOTrainer(theirs_model, ref_model=worker.tiny_model(len(tokenizer)), args=args,
                        train_dataset=worker.builtin_pairs(8), processing_class=tokenizer)
    for model in (ours.model, ours.ref_model, theirs.model, theirs.ref_model):
        model.double()  # TRL's fused head still rounds its log-probs to float32
    batch = first_batch(ours)
    assert torch.equal(batch["input_ids"], first_batch(theirs)["input_ids"])
    loss = ours.compute_loss(ours.model, batch)
    trl_loss = theirs.compute_loss(theirs.model, first_batch(theirs))
    loss.backward()
    trl_loss.backward()
    # float32 sums of ~250 nats: ~1e-4 absolute in each, beta times that in the loss
    assert loss.item() == pytest.approx(trl_loss.item(), abs=2e-4)
    for (name, p), (_, q) in zip(ours.model.named_parameters(),
                                 theirs.model.named_parameters()):
        scale = q.grad.abs().max().item()
        assert scale > 0 and (p.grad - q.grad).abs().max().item() <= 2e-3 * scale, name


def test_simpo_loss_equals_trl_cpo_simpo(tmp_path, tokenizer):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    trainer = make_trainer(tmp_path, tokenizer, loss_type="simpo", beta=2.0, simpo_gamma=0.5)
    loss, metrics = trainer.compute_loss(trainer.model, first_batch(trainer),
                                         return_outputs=True)
    cpo = types.SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=0.5, beta=2.0,
                                label_smoothing=0.0,
                                accelerator=types.SimpleNamespace(device="cpu"))
    trl_losses = CPOTrainer.cpo_loss(cpo, metrics["chosen_logps_avg"],
                                     metrics["rejected_logps_avg"])[0]
    assert loss.item() == pytest.approx(trl_losses.mean().item(), rel=1e-6)


@pytest.mark.parametrize("row,message", [
    ({"prompt": "1+1", "chosen": " 2"}, "row 1: no 'rejected'"),
    ({"prompt": "1+1", "chosen": "", "rejected": " 3"}, "row 1: empty 'chosen'"),
    ({"prompt": [{"role": "user", "content": "1+1"}], "chosen": [],
      "rejected": [{"role": "assistant", "content": "3"}]}, "row 1: empty 'chosen'"),
])
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path, tokenizer, row, message):
    from datasets import Dataset

    good = {"prompt": "1+2", "chosen": " 3", "rejected": " 4"}
    if isinstance(row["prompt"], list):
        good = worker.builtin_pairs(1)[0]
    rows = [good, row]
    keys = set().union(*rows)
    dataset = Dataset.from_list([{k: r.get(k) for k in keys} for r in rows])
    with pytest.raises(ValueError, match=message) as err:
        REDITrainer(worker.tiny_model(len(tokenizer)), args=worker.trainer_args(str(tmp_path)),
                    train_dataset=dataset, processing_class=tokenizer)
    assert "\n" not in str(err.value)


def test_unsupported_loss_type_is_an_error(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="loss_type must be one of"):
        make_trainer(tmp_path, tokenizer, loss_type="hinge")


def test_twenty_steps_on_the_builtin_task_lower_the_redi_loss(tmp_path, tokenizer):
    trainer = make_trainer(tmp_path, tokenizer, n=80, max_steps=20, learning_rate=3e-3)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses


@pytest.mark.slow
def test_two_processes_give_the_gradients_of_one_with_the_doubled_batch(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    def grads(launcher, pairs, name):
        out = tmp_path / name
        result = subprocess.run([*launcher, str(WORKER), str(out), str(pairs)], env=env,
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return torch.load(out, weights_only=True)

    one = grads([sys.executable], 4, "one.pt")
    two = grads([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node=2"], 2, "two.pt")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-7)


def dpo_loss_from_full_logits(model, ref_sums, batch, beta):
    sums, _ = full_logit_sums(model, batch)
    b = sums.shape[0] // 2
    return LF.dpo_loss(sums[:b], sums[b:], ref_sums[:b], ref_sums[b:], beta=beta)[0]


def test_precompute_ref_log_probs_builds_the_table_once_and_drops_the_reference(tmp_path,
                                                                               tokenizer):
    trainer = make_trainer(tmp_path, tokenizer, loss_type="sigmoid", beta=0.5,
                           precompute_ref_log_probs=True, precompute_ref_batch_size=3)
    assert trainer.ref_model is None  # no frozen copy is kept
    initial = copy.deepcopy(trainer.model).double()
    batch = first_batch(trainer)
    ref_sums, _ = full_logit_sums(initial, batch)
    table = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(table.double(), ref_sums, rtol=1e-5, atol=1e-4)
    with torch.no_grad():  # a trained policy: the reference must stay the initial model
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p).sign() * p.abs().mean())
    loss = trainer.compute_loss(trainer.model, batch)
    expected = dpo_loss_from_full_logits(trainer.model.double(), ref_sums, batch, beta=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert abs(expected.item() - 0.6931) > 1e-3  # the policy moved: a reference = policy fails


def test_precompute_covers_the_eval_dataset_and_refuses_a_batch_without_the_table(tmp_path,
                                                                                 tokenizer):
    args = worker.trainer_args(str(tmp_path), loss_type="sigmoid",
                               precompute_ref_log_probs=True)
    trainer = REDITrainer(worker.tiny_model(len(tokenizer)), args=args,
                          train_dataset=worker.builtin_pairs(4),
                          eval_dataset={"a": worker.builtin_pairs(3)},
                          processing_class=tokenizer)
    assert "ref_chosen_logps" in trainer.eval_dataset["a"].column_names
    assert len(trainer.eval_dataset["a"]["ref_rejected_logps"]) == 3
    batch = first_batch(trainer)
    del batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    with pytest.raises(ValueError, match="no ref_chosen_logps"):
        trainer.compute_loss(trainer.model, batch)


def test_precomputed_dpo_trains_like_the_online_reference(tmp_path, tokenizer):
    logs = {}
    for precompute in (False, True):
        trainer = make_trainer(tmp_path / str(precompute), tokenizer, loss_type="sigmoid",
                               max_steps=3, precompute_ref_log_probs=precompute)
        trainer.train()
        logs[precompute] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(logs[True]) == 3
    assert logs[True] == pytest.approx(logs[False], rel=1e-4)


@pytest.mark.parametrize("precompute", [False, True])
def test_peft_dpo_reference_is_the_base_model_with_adapters_off(tmp_path, tokenizer,
                                                                precompute):
    pytest.importorskip("peft")
    from peft import LoraConfig

    args = worker.trainer_args(str(tmp_path), loss_type="sigmoid", beta=0.5,
                               precompute_ref_log_probs=precompute, max_steps=1)
    trainer = REDITrainer(worker.tiny_model(len(tokenizer)), args=args,
                          train_dataset=worker.builtin_pairs(8), processing_class=tokenizer,
                          peft_config=LoraConfig(r=4, lora_alpha=8,
                                                 target_modules=["q_proj", "v_proj"]))
    model = trainer.model
    assert trainer.ref_model is None and hasattr(model, "disable_adapter")
    batch = first_batch(trainer)
    with model.disable_adapter():
        base_sums, _ = full_logit_sums(copy.deepcopy(model).double(), batch)
    with torch.no_grad():  # adapters that change the policy (LoRA's B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn_like(p))
    loss = trainer.compute_loss(model, batch)
    expected = dpo_loss_from_full_logits(copy.deepcopy(model).double(), base_sums, batch,
                                         beta=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert abs(expected.item() - 0.6931) > 1e-3  # a reference = policy would give log 2
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    trainer.train()  # one step: only the adapters move
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("columns,message", [
    ({"ref_chosen_logps": [-3.0, float("nan"), -2.0, -1.0]},
     "train dataset has a 'ref_chosen_logps' column but no 'ref_rejected_logps'"),
    ({"ref_chosen_logps": [-3.0, float("nan"), -2.0, -1.0], "ref_rejected_logps": [-4.0] * 4},
     "train dataset row 1: ref_chosen_logps is nan; reference log-probs must be finite"),
    ({"ref_chosen_logps": [-3.0] * 4, "ref_rejected_logps": [-4.0, -4.0, float("-inf"), -1.0]},
     "train dataset row 2: ref_rejected_logps is -inf; reference log-probs must be finite"),
])
def test_supplied_reference_columns_must_be_both_there_and_finite(tmp_path, tokenizer,
                                                                  columns, message):
    dataset = worker.builtin_pairs(4)
    for name, values in columns.items():
        dataset = dataset.add_column(name, values)
    with pytest.raises(ValueError, match=f"^{message}$"):
        REDITrainer(worker.tiny_model(len(tokenizer)),
                    args=worker.trainer_args(str(tmp_path), loss_type="sigmoid"),
                    train_dataset=dataset, processing_class=tokenizer)


def test_a_non_finite_loss_stops_training_before_the_optimizer_step(tmp_path, tokenizer):
    trainer = make_trainer(tmp_path, tokenizer, max_steps=2)
    with torch.no_grad():
        trainer.model.lm_head.weight[5, 0] = float("nan")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"^step 1: loss nan; stopped before the "
                                                 "optimizer step"):
        trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(torch.allclose(after[n], p, equal_nan=True) for n, p in before.items())


def test_the_negative_floor_is_active_on_the_test_batch(tmp_path, tokenizer):
    """The floored case above can fail only if some rejected tokens lie below tau and some
    above; and the floor changes the loss."""
    trainer = make_trainer(tmp_path, tokenizer, negative_floor=0.0031)
    batch = first_batch(trainer)
    token, mask = full_logit_tokens(trainer.model.double(), batch)
    rejected = token[len(token) // 2:][mask[len(mask) // 2:]]
    below = (rejected < math.log(0.0031)).float().mean().item()
    assert 0.1 < below < 0.9, below
    floored = trainer.compute_loss(trainer.model, batch).item()
    trainer.loss_fn.negative_floor = None
    assert floored != pytest.approx(trainer.compute_loss(trainer.model, batch).item(), rel=1e-6)


def test_negative_floor_is_refused_for_dpo_and_simpo(tmp_path, tokenizer):
    for loss_type in ("sigmoid", "simpo"):
        with pytest.raises(ValueError, match="negative_floor is a REDI option"):
            make_trainer(tmp_path, tokenizer, loss_type=loss_type, negative_floor=0.01)


def identical_pair_rows(n, same):
    """``n`` built-in pairs of which rows ``same`` have their chosen as rejected."""
    from datasets import Dataset

    rows = list(worker.builtin_pairs(n, conversational=False))
    for i in same:
        rows[i]["rejected"] = rows[i]["chosen"]
    return Dataset.from_list(rows)


def test_identical_pairs_are_counted_dropped_and_named(tmp_path, tokenizer, caplog):
    rows = identical_pair_rows(6, [2, 4])
    with caplog.at_level(logging.WARNING, logger="redi.integrations.trl"):
        trainer = REDITrainer(worker.tiny_model(len(tokenizer)),
                              args=worker.trainer_args(str(tmp_path)), train_dataset=rows,
                              processing_class=tokenizer)
    assert trainer.identical_pairs == {"train": 2}
    kept = trainer.train_dataset
    assert len(kept) == 4
    assert all(r["chosen_ids"] != r["rejected_ids"] for r in kept)
    assert "dropped 2 of 6 pairs" in caplog.text and "row 2" in caplog.text
    keep = REDITrainer(worker.tiny_model(len(tokenizer)),
                       args=worker.trainer_args(str(tmp_path), drop_identical_pairs=False),
                       train_dataset=rows, processing_class=tokenizer)
    assert len(keep.train_dataset) == 6 and keep.identical_pairs == {"train": 2}


def test_a_dataset_of_identical_pairs_only_is_an_error(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="every one of its 3 pairs") as err:
        REDITrainer(worker.tiny_model(len(tokenizer)), args=worker.trainer_args(str(tmp_path)),
                    train_dataset=identical_pair_rows(3, [0, 1, 2]),
                    processing_class=tokenizer)
    assert "\n" not in str(err.value)
