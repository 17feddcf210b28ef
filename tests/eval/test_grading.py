"""The one answer checker ``redi.eval.is_correct``: rllm's rules (the paper's evaluation
scripts), math-verify, and the built-in task's exact grader, on cases written from the
documented rules."""

import pytest

from redi.data.builtin_task import check_answer
from redi.eval import is_correct
from redi.grading.rllm_grader import mathd_normalize


@pytest.mark.parametrize("response,answers,expected", [
    # the answer is read only after </think>: a boxed guess inside the thinking is no answer
    (r"<think>maybe \boxed{5}?</think> The answer is 5.", "5", False),
    (r"<think>maybe \boxed{4}?</think> So \boxed{5}.", "5", True),
    (r"<think>maybe \boxed{5}?</think> So \boxed{4}.", "5", False),
    # without </think> the whole response is read; the last box counts
    (r"first \boxed{4}, finally \boxed{5}", "5", True),
    # any of several references
    (r"\boxed{7}", ["5", "7"], True),
    (r"\boxed{6}", ["5", "7"], False),
    # \frac vs decimal, \dfrac, unbraced \frac
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"\boxed{\frac{1}{2}}", "0.5", True),
    (r"\boxed{\dfrac{3}{4}}", r"\frac34", True),
    (r"\boxed{\tfrac{3}{4}}", "3/4", True),
    (r"\boxed{0.33}", r"\frac{1}{3}", False),
    # units and text around the number
    (r"\boxed{5 \text{ cm}}", "5", True),
    (r"\boxed{x = 5}", "5", True),
    (r"\boxed{\$12}", "12", True),
    (r"\boxed{90^\circ}", "90", True),
    (r"\boxed{1,000}", "1000", True),
    # nested braces
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", True),
    (r"\boxed{(x+1)^{2}}", "x^2+2x+1", True),
    # no box, an unclosed last box, an empty box
    ("The answer is 5.", "5", False),
    (r"So \boxed{5} or rather \boxed{6", "5", False),
    (r"\boxed{}", "5", False),
    # a model's text is never run as code
    (r"\boxed{__import__('os').system('true')}", "0", False),
])
def test_rllm_grader_follows_its_rules(response, answers, expected):
    assert is_correct(response, answers) is expected
    assert is_correct(response, answers, grader="rllm") is expected


def test_mathd_normalizer_spellings():
    assert mathd_normalize(r"\left( 1, \dfrac12 \right)") == r"(1,\frac{1}{2})"
    assert mathd_normalize(r".5") == "0.5"
    assert mathd_normalize(r"\sqrt3") == r"\sqrt{3}"
    assert mathd_normalize(r"\text{(B)}") == "(B)"


def test_math_verify_grader_reads_the_last_box_anywhere_and_every_reference():
    response = r"<think>\boxed{5}</think> no box after the thinking"
    assert is_correct(response, "5", grader="math-verify")
    assert not is_correct(response, "5", grader="rllm")
    assert is_correct(r"\boxed{\frac{1}{2}}", ["3", "0.5"], grader="math-verify")


@pytest.mark.parametrize("response,expected", [
    (r"<think>...</think>\boxed{632}", True),
    (r"\boxed{ 0632 }", True),
    (r"\boxed{632", False),                # unclosed: no answer, as in every grader
    (r"\boxed{631}", False),
    ("632", False),
])
def test_builtin_task_labels_with_the_eval_grader(response, expected):
    assert check_answer(response, "632") is expected
    assert is_correct(response, "632", grader="exact") is expected


def test_unknown_grader_is_an_error():
    with pytest.raises(ValueError, match="grader must be one of"):
        is_correct(r"\boxed{1}", "1", grader="nope")
