"""The two comparisons of rllm's math reward, written from its documented rules.

* ``mathd_normalize`` / ``mathd_equal``: the MATH ("mathd") string normalization, then
  string equality. It removes what does not change an answer's value: spaces, ``$``,
  ``\\left``/``\\right``, ``\\!``, degree marks, ``\\%``, units in ``\\text{}``/``\\mbox{}``
  after the value, a short ``x =`` in front; it spells ``\\dfrac``/``\\tfrac`` as ``\\frac``,
  ``\\frac12`` as ``\\frac{1}{2}``, ``\\sqrt3`` as ``\\sqrt{3}``, ``a/b`` of two integers as
  ``\\frac{a}{b}``, ``.5`` as ``0.5``, and drops thousands separators (``1,000``).
* ``sympy_equal``: both normalized answers translated from simple LaTeX (``\\frac``,
  ``\\sqrt``, ``^``, ``\\cdot``, ``\\pi``, ``\\infty``) to sympy expressions; equal when
  their difference simplifies to 0 (so ``\\frac{1}{2}`` equals ``0.5``). Comma-separated
  answers compare element by element, in order. Only digits, operators, brackets, the named
  functions and single-letter symbols are ever parsed (the text of a model's answer is
  never evaluated as Python beyond that), and long answers are not tried.
"""

from __future__ import annotations

import re

MAX_SYMPY_CHARS = 120
_UNIT_WORDS = re.compile(r"\\(?:text|mbox|mathrm)\{[^{}]*\}")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """(content, end) of the ``{...}`` group opening at ``text[start]``, else None."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i], i + 1
    return None


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{x}`` -> ``\\frac{1}{x}``."""
    parts = text.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        for _ in range(2):  # numerator, then denominator
            if part.startswith("{"):
                group = _braced(part, 0)
                if group is None:
                    break
                out, part = out + part[:group[1]], part[group[1]:]
            elif part:
                out, part = out + "{" + part[0] + "}", part[1:]
        out += part
    return out


def _strip_units(text: str) -> str:
    """Units written as text after a value (``5\\text{ cm}``) go; a whole answer that is
    text (``\\text{(A)}``) keeps its words."""
    without = _UNIT_WORDS.sub("", text).strip()
    if without:
        return without
    return re.sub(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}", r"\1", text)


def mathd_normalize(answer: str) -> str:
    """The mathd-style canonical string of an answer (see the module docstring)."""
    s = answer.strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _strip_units(s)
    s = s.replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = re.sub(r"(?<![\d])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    head, sep, tail = s.partition("=")
    if sep and len(head.strip()) <= 2 and "=" not in tail:  # "x = 5" -> "5"
        s = tail
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = re.sub(r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def mathd_equal(gold: str, answer: str) -> bool:
    return mathd_normalize(gold) == mathd_normalize(answer)


def _to_python(latex: str) -> str | None:
    """Simple LaTeX as sympy-parsable text, or None when it holds anything else."""
    s = latex
    for name, replacement in (("\\cdot", "*"), ("\\times", "*"), ("\\pi", "pi"),
                              ("\\infty", "oo"), ("\\div", "/")):
        s = s.replace(name, replacement)
    while "\\frac" in s:
        i = s.index("\\frac")
        num = _braced(s, i + 5)
        den = num and _braced(s, num[1])
        if not den:
            return None
        s = s[:i] + f"(({num[0]})/({den[0]}))" + s[den[1]:]
    while "\\sqrt" in s:
        i = s.index("\\sqrt")
        arg = _braced(s, i + 5)
        if not arg:
            return None
        s = s[:i] + f"sqrt({arg[0]})" + s[arg[1]:]
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    if not re.fullmatch(r"[0-9A-Za-z+\-*/().\s]*", s):
        return None
    if any(len(w) > 1 and w not in ("sqrt", "pi", "oo") for w in re.findall(r"[A-Za-z]+", s)):
        return None
    return s


def _sympy_value(latex: str):
    from sympy import Float, Function, Integer, Rational, Symbol, oo, pi, sqrt
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    text = _to_python(latex)
    if text is None or not text.strip():
        return None
    names = {c: Symbol(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    names.update(sqrt=sqrt, pi=pi, oo=oo)
    transformations = standard_transformations + (implicit_multiplication_application,)
    constructors = {"Integer": Integer, "Float": Float, "Rational": Rational,
                    "Symbol": Symbol, "Function": Function, "__builtins__": {}}
    return parse_expr(text, local_dict=names, global_dict=constructors,
                      transformations=transformations)


def sympy_equal(gold: str, answer: str) -> bool:
    """Whether sympy finds the two normalized answers equal (see the module docstring)."""
    a, b = mathd_normalize(gold), mathd_normalize(answer)
    if max(len(a), len(b)) > MAX_SYMPY_CHARS:
        return False
    a_parts, b_parts = a.split(","), b.split(",")
    if len(a_parts) != len(b_parts):
        return False
    from sympy import simplify

    try:
        for x, y in zip(a_parts, b_parts, strict=True):
            vx, vy = _sympy_value(x), _sympy_value(y)
            if vx is None or vy is None or simplify(vx - vy) != 0:
                return False
        return True
    except Exception:  # sympy cannot parse or compare them: not shown equal
        return False
