"""The length-grouped batch sampler: determinism, budgets, resumption, ranks."""

import numpy as np
import pytest

from redi.data.sampler import LengthGroupedBatchSampler

LENGTHS = np.random.default_rng(0).integers(5, 100, size=500).tolist()


def epoch(sampler):
    return list(sampler)


def test_same_seed_same_order_other_seed_other_order():
    a = epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=1))
    assert a == epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=1))
    assert a != epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=2))


def test_every_item_once_per_epoch_and_epochs_differ():
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=1)
    first, second = epoch(sampler), epoch(sampler)
    assert sorted(sum(first, [])) == list(range(500)) == sorted(sum(second, []))
    assert first != second
    assert [len(b) for b in first].count(8) == 62 and len(first) == 63
    assert len(epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, drop_last=True))) == 62


def fill(batches):
    """Mean share of real tokens in padded batches."""
    lengths = np.array(LENGTHS)
    return np.mean([lengths[b].sum() / (len(b) * lengths[b].max()) for b in batches])


def test_batches_are_length_grouped_when_asked():
    grouped = epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=1, group_batches=50))
    assert fill(grouped) > 0.9


def test_default_batches_are_random_chunks_of_the_shuffle():
    batches = epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=1))
    order = np.random.default_rng([1, 0]).permutation(500)
    chunks = [sorted(order[i:i + 8].tolist()) for i in range(0, 500, 8)]
    assert sorted(sorted(b) for b in batches) == sorted(chunks)
    assert fill(batches) < 0.8


def test_token_budget():
    batches = epoch(LengthGroupedBatchSampler(LENGTHS, max_tokens=300, seed=1))
    assert sorted(sum(batches, [])) == list(range(500))
    assert max(sum(LENGTHS[i] for i in b) for b in batches) <= 300
    with pytest.raises(ValueError, match="more than max_tokens=50"):
        LengthGroupedBatchSampler(LENGTHS, max_tokens=50)
    with pytest.raises(ValueError, match="exactly one of batch_size and max_tokens"):
        LengthGroupedBatchSampler(LENGTHS)


@pytest.mark.parametrize("budget", [{"batch_size": 8}, {"max_tokens": 300},
                                    {"batch_size": 8, "group_batches": 50}])
def test_restored_sampler_yields_the_same_remaining_order(budget):
    reference = LengthGroupedBatchSampler(LENGTHS, seed=3, **budget)
    full = epoch(reference) + epoch(reference)
    sampler = LengthGroupedBatchSampler(LENGTHS, seed=3, **budget)
    iterator = iter(sampler)
    taken = [next(iterator) for _ in range(10)]
    state = sampler.state_dict()
    assert (state["epoch"], state["position"]) == (0, 10)
    restored = LengthGroupedBatchSampler(LENGTHS, seed=3, **budget)
    restored.load_state_dict(state)
    rest = epoch(restored)
    assert taken + rest == full[:len(full) // 2]
    assert epoch(restored) == full[len(full) // 2:]  # the next epoch follows on


def test_resuming_at_the_end_of_an_epoch_starts_the_next():
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=3)
    epochs = [epoch(sampler), epoch(sampler)]
    restored = LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=3)
    restored.load_state_dict({**restored.state_dict(), "epoch": 0, "position": 63})
    assert epoch(restored) == epochs[1]
    restored.set_epoch(1)  # set_epoch to the current epoch keeps the position
    assert restored.state_dict()["position"] == 63


def test_state_of_another_sampler_is_refused():
    state = LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=3).state_dict()
    with pytest.raises(ValueError, match="fingerprint"):
        LengthGroupedBatchSampler(LENGTHS[:-1], batch_size=8, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="seed is 3 in the state, 4 here"):
        LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=4).load_state_dict(state)


@pytest.mark.parametrize("edit,message", [
    ({"position": None}, "no 'position'"),
    ({"epoch": "1"}, "epoch is '1', not a count"),
    ({"position": True}, "position is True, not a count"),
    ({"position": -1}, "position is -1, not a count"),
    ({"position": 64}, "position 64 is past the 63 batches of epoch 0"),
])
def test_a_hand_edited_state_is_refused_naming_the_key(edit, message):
    """A state read from a checkpoint file; the sampler keeps its own position."""
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=3)
    next(iter(sampler))
    state = {k: v for k, v in {**sampler.state_dict(), **edit}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        sampler.load_state_dict(state)
    assert (sampler.epoch, sampler.position) == (0, 1)


def test_ranks_deal_the_single_process_batches_round_robin():
    single = epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=5))
    ranks = [epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=8, seed=5, num_replicas=2,
                                             rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 31
    assert [b for pair in zip(*ranks, strict=True) for b in pair] == single[:62]


def test_without_shuffle_items_stay_in_order():
    batches = epoch(LengthGroupedBatchSampler(LENGTHS, batch_size=100, shuffle=False))
    assert batches == [list(range(i, i + 100)) for i in range(0, 500, 100)]
