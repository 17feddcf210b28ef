"""redi.data's lazy exports and the redi prepare command's registration."""

import redi.data
from redi.cli import COMMANDS


def test_exports_resolve():
    assert len(redi.data.__all__) == 17
    assert all(getattr(redi.data, name) is not None for name in redi.data.__all__)


def test_prepare_is_a_redi_command():
    assert COMMANDS["prepare"][0] == "redi.data.cli:main"


def test_tokenizer_saved_beside_a_model_config_keeps_its_token_ids(tmp_path):
    """An exported model directory holds config.json (model_type qwen2) and the tokenizer:
    loading it must not swap in Qwen2's own pre-tokenizer."""
    import json

    from redi.data.tokenizer import load_tokenizer

    builtin = load_tokenizer()
    builtin.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    text = "<think>\nunits: 8 + 4 = 12, write 2, carry 1\n</think>\n\\boxed{632}"
    assert load_tokenizer(tmp_path)(text)["input_ids"] == builtin(text)["input_ids"]
