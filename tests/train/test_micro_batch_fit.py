"""A recipe written for one process runs on N: ``fit_micro_batch`` lowers a micro-batch larger
than ``global_batch_size / processes`` to the largest size that divides, and keeps the error
where no size fits."""

import pytest

from redi.train.config import ConfigError, build_config, fit_micro_batch


def config(global_batch, micro):
    return build_config(None, [f"global_batch_size={global_batch}",
                               f"micro_batch_size={micro}", "model_config.vocab_size=8"],
                        data="builtin", loss="redi")


@pytest.mark.parametrize("global_batch,micro,processes,fitted", [
    (32, 32, 2, 16),   # recipes/tiny_redi.yaml on 2 processes
    (32, 32, 3, None),  # 32 is no multiple of 3: error below
    (24, 32, 2, 12),
    (24, 20, 4, 6),
    (20, 16, 4, 5),
    (12, 7, 2, 6),
    (8, 8, 8, 1),
])
def test_a_too_large_micro_batch_is_lowered_to_the_largest_that_divides(
        global_batch, micro, processes, fitted):
    if fitted is None:
        with pytest.raises(ConfigError, match="multiple of the number of processes"):
            fit_micro_batch(config(global_batch, micro), processes)
        return
    fitted_config, line = fit_micro_batch(config(global_batch, micro), processes)
    assert fitted_config.micro_batch_size == fitted
    assert global_batch % (fitted * processes) == 0
    assert f"micro_batch_size={micro} lowered to {fitted}" in line
    assert "\n" not in line


def test_a_fitting_micro_batch_is_kept():
    original = config(32, 4)
    fitted, line = fit_micro_batch(original, 2)
    assert fitted is original and line is None


@pytest.mark.parametrize("global_batch,micro,processes,match", [
    (32, 3, 2, r"multiple of micro_batch_size x processes = 3 x 2"),  # not larger: kept error
    (1, 1, 2, r"global_batch_size=1 must be a multiple of the number of processes \(2\)"),
    (30, 8, 4, r"global_batch_size=30 must be a multiple of the number of processes \(4\)"),
])
def test_no_fitting_size_is_a_one_line_error(global_batch, micro, processes, match):
    with pytest.raises(ConfigError, match=match):
        fit_micro_batch(config(global_batch, micro), processes)


def test_micro_batch_of_zero_is_still_refused():
    with pytest.raises(ConfigError, match="micro_batch_size must be >= 1"):
        config(32, 0)
