"""Collators (padded vs packed hold the same tokens and labels), tokenized datasets, and a
DataLoader over them."""

import json

import torch

from redi.data.batching import collate_pairs, collate_sft, make_collator, pack_sequences
from redi.data.formatting import IGNORE_INDEX, Formatter
from redi.data.sampler import LengthGroupedBatchSampler
from redi.data.tokenized import load_pairs, load_sft, tokenize_pairs, tokenize_sft
from redi.data.tokenizer import load_tokenizer

SFT = [{"input_ids": [1, 2, 3], "labels": [-100, 3, -100]},
       {"input_ids": [4, 5], "labels": [5, -100]},
       {"input_ids": [6, 7, 8, 9], "labels": [-100, 8, 9, -100]}]
PAIRS = [{"chosen_input_ids": [1, 2, 3], "chosen_labels": [-100, 3, -100],
          "rejected_input_ids": [1, 2, 4, 5], "rejected_labels": [-100, 4, 5, -100]},
         {"chosen_input_ids": [6, 7], "chosen_labels": [7, -100],
          "rejected_input_ids": [6, 8], "rejected_labels": [8, -100]}]


def rows_of_padded(batch):
    """(input_ids, labels) per row with the padding removed."""
    mask = batch["attention_mask"].bool()
    return [(ids[m].tolist(), labels[m].tolist())
            for ids, labels, m in zip(batch["input_ids"], batch["labels"], mask,
                                      strict=True)]


def rows_of_packed(batch):
    """(input_ids, labels) per sequence, split at cu_seqlens."""
    bounds = batch["cu_seqlens"].tolist()
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return [(ids[a:b], labels[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def test_padded_sft_batch_exact():
    batch = collate_sft(SFT, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]
    assert batch["labels"].tolist() == [[-100, 3, -100, -100], [5, -100, -100, -100],
                                        [-100, 8, 9, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0], [0, 1, 2, 3]]
    assert collate_sft(SFT, 0, pad_to_multiple_of=8)["input_ids"].shape == (3, 8)


def test_packed_sft_batch_exact():
    batch = collate_sft(SFT, pad_token_id=0, packed=True)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert batch["labels"].tolist() == [[-100, 3, -100, 5, -100, -100, 8, 9, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert batch["cu_seqlens"].tolist() == [0, 3, 5, 9]
    assert batch["cu_seqlens"].dtype == torch.int32
    assert batch["seq_index"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert {k: v.dtype for k, v in batch.items() if k != "cu_seqlens"} == {
        "input_ids": torch.long, "labels": torch.long, "position_ids": torch.long,
        "seq_index": torch.long}


def test_padded_and_packed_pairs_hold_the_same_sequences_chosen_first():
    padded, packed = collate_pairs(PAIRS, 0), collate_pairs(PAIRS, 0, packed=True)
    expected = [(p[f"{side}_input_ids"], p[f"{side}_labels"])
                for side in ("chosen", "rejected") for p in PAIRS]
    assert padded["input_ids"].shape == (4, 4)
    assert rows_of_padded(padded) == expected
    assert rows_of_packed(packed) == expected
    assert packed["chosen_index"].tolist() == [0, 1]
    assert packed["rejected_index"].tolist() == [2, 3]


def test_example_index_rides_along():
    examples = [dict(e, index=i) for i, e in zip((7, 3, 5), SFT, strict=True)]
    for packed in (False, True):
        assert collate_sft(examples, 0, packed=packed)["index"].tolist() == [7, 3, 5]
    pairs = [dict(p, index=i) for i, p in zip((4, 1), PAIRS, strict=True)]
    for packed in (False, True):
        assert collate_pairs(pairs, 0, packed=packed)["index"].tolist() == [4, 1]
    assert "index" not in collate_sft(SFT, 0)


def test_packing_never_predicts_across_a_boundary():
    batch = pack_sequences([([1, 2], [2, -100]), ([3, 4], [4, -100])])
    ends = batch["cu_seqlens"][1:] - 1
    assert (batch["labels"][0, ends] == IGNORE_INDEX).all()


def test_tokenized_datasets_padded_and_packed_agree(tmp_path):
    formatter = Formatter(load_tokenizer())
    conversations = [[{"role": "user", "content": f"Compute {i} + {i}."},
                      {"role": "assistant", "content": f"\\boxed{{{2 * i}}}"}] for i in range(5)]
    sft = tokenize_sft(conversations, formatter)
    assert sft.column_names == ["input_ids", "labels", "length", "index"]
    assert sft["index"] == [0, 1, 2, 3, 4]
    assert sft["length"] == [len(ids) for ids in sft["input_ids"]]
    examples = [sft[i] for i in range(len(sft))]
    assert rows_of_padded(collate_sft(examples, 0)) == rows_of_packed(
        collate_sft(examples, 0, packed=True))
    pairs = tokenize_pairs([(c[:1], c[1:], [{"role": "assistant", "content": "no"}])
                            for c in conversations], formatter)
    assert pairs[0]["length"] == len(pairs[0]["chosen_input_ids"]) + len(
        pairs[0]["rejected_input_ids"])
    examples = [pairs[i] for i in range(len(pairs))]
    assert rows_of_padded(collate_pairs(examples, 0)) == rows_of_packed(
        collate_pairs(examples, 0, packed=True))


def test_dataloader_over_prepared_files(tmp_path):
    messages = [{"role": "user", "content": "Compute 1 + 2."},
                {"role": "assistant", "content": "\\boxed{3}"}]
    (tmp_path / "sft.jsonl").write_text(json.dumps({"messages": messages}) + "\n")
    pair = {"prompt": messages[:1], "chosen": messages[1:],
            "rejected": [{"role": "assistant", "content": "\\boxed{4}"}]}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    formatter = Formatter(load_tokenizer())
    sft, pairs = load_sft(tmp_path / "sft.jsonl", formatter), load_pairs(
        tmp_path / "pairs.jsonl", formatter)
    assert sft[0]["input_ids"] == pairs[0]["chosen_input_ids"]
    assert sft[0] == {**formatter.encode_sft([messages])[0], "length": len(sft[0]["input_ids"]),
                      "index": 0}
    loader = torch.utils.data.DataLoader(
        pairs, batch_sampler=LengthGroupedBatchSampler(pairs["length"], max_tokens=64),
        collate_fn=make_collator("pairs", formatter.tokenizer.pad_token_id, packed=True))
    (batch,) = list(loader)
    assert batch["input_ids"].shape == (1, pairs[0]["length"])
    assert batch["index"].tolist() == [0]
    assert batch["chosen_index"].tolist() == [0] and batch["rejected_index"].tolist() == [1]
