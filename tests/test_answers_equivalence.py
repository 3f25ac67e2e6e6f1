"""Invariants of answer equivalence: a table of same and different answers, refusal of code, and a time
bound that holds for pathological inputs in the main thread and in worker threads."""

import signal
import threading
import time

import pytest

from ttc.answers import is_equivalent, warm_up
from ttc.answers.deadline import call_with_deadline

# (gold, prediction, equivalent?)
EQUIVALENCE_TABLE = [
    # fractions, decimals, and their spellings
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{1}{2}", "1/2", True),
    (r"\dfrac{1}{2}", r"\frac12", True),
    (r"\tfrac{3}{4}", "0.75", True),
    (r"\frac{1}{2}", r"\frac{2}{4}", True),
    (r"\frac{9}{2}", "4.5", True),
    ("1.5", r"\frac32", True),
    ("0.1", "1/10", True),
    (r"\frac{1}{3}", "0.3333333", True),
    (r"\frac{1}{3}", "0.333", False),
    (r"\frac{1}{2}", r"\frac{1}{3}", False),
    # integers, decimals, separators, signs
    ("5", "5.0", True),
    ("18", "18.00", True),
    ("10", "010", True),
    ("1,000", "1000", True),
    ("1000", "1{,}000", True),
    ("1000", "1,000.0", True),
    ("2", "3", False),
    ("-3", "3", False),
    (r"-\frac{1}{2}", "-0.5", True),
    (r"-\frac{1}{2}", "0.5", False),
    ("2^{10}", "1024", True),
    # roots and pi
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"2\sqrt{3}", r"\sqrt{12}", True),
    (r"\sqrt{3}", r"\sqrt{2}", False),
    (r"\pi", "3.14159265358979", True),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\frac{\pi}{2}", r"\pi/2", True),
    (r"\pi", "3.14", False),
    # expressions and equations
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("x=5", "5", True),
    ("5", "x=5", True),
    ("y=2x+3", "2x+3", True),
    ("p=7", "q=7", False),
    ("3+2i", "2i+3", True),
    # intervals, tuples, sets, matrices
    (r"\left(1,2\right)", "(1,2)", True),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    ("[1,2)", "[1,2]", False),
    (r"x \in [2,5)", "[2,5)", True),
    ("(3, -4)", "(3,-4)", True),
    ("(1,2)", "(2,1)", False),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True),
    (r"\{1,2\}", r"\{2,1\}", True),
    ("1,2,3", "3,2,1", True),
    (r"\emptyset", r"\varnothing", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\3\end{pmatrix}", False),
    # text answers and multiple choice
    (r"\text{(C)}", "C", True),
    (r"\text{(C)}", "(C)", True),
    ("C", "D", False),
    (r"\text{Monday}", "Monday", True),
    (r"\text{Monday}", r"\text{Tuesday}", False),
    (r"\text{even}", "even", True),
    ("6", "six", False),
    # degrees, percent, units, currency
    (r"30^\circ", "30", True),
    (r"30^{\circ}", "30", True),
    ("30", "30°", True),
    (r"5\%", "5", True),
    (r"50\%", "0.5", True),
    (r"10\text{ cm}", "10", True),
    (r"10\text{ cm}", "12", False),
    (r"\$18", "18", True),
    ("5", "5 dollars", True),
    ("12", "12 red apples.", True),
    ("12", "13 apples", False),
    ("2x", "2 x", True),
    ("18", r"\$18.00", True),
    # math delimiters, boxes and spacing around the answer
    (r"\frac{1}{2}", r"$\frac{1}{2}$", True),
    (r"\frac{1}{2}", r"\boxed{0.5}", True),
    ("12", r"1\,2", True),
    # base subscripts are dropped by math-verify, so the digits alone match
    ("52_8", "52_8", True),
    ("52_8", "52", True),
    ("52_8", "53_8", False),
]


@pytest.fixture(scope="module", autouse=True)
def math_verify_warm():
    """Pay math-verify's one-time import before any test is timed."""
    warm_up()


@pytest.mark.parametrize(("gold", "pred", "equivalent"), EQUIVALENCE_TABLE, ids=lambda value: str(value))
def test_equivalence_table(gold, pred, equivalent):
    assert is_equivalent(pred, gold) is equivalent


def test_the_table_holds_both_verdicts_and_at_least_sixty_cases():
    verdicts = [equivalent for _, _, equivalent in EQUIVALENCE_TABLE]
    assert len(verdicts) >= 60 and verdicts.count(False) >= 15


@pytest.mark.parametrize("pred", [None, "", "   ", "$$"])
def test_a_missing_or_empty_prediction_is_never_equivalent(pred):
    assert is_equivalent(pred, "5") is False
    assert is_equivalent("5", "") is False


# Payloads that would do harm if any code path passed them to eval; {marker} is a file they would create.
INJECTIONS = [
    "__import__('os').system('touch {marker}')",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: __import__('os').system('touch {marker}')",
    "exec(\"import os; os.system('touch {marker}')\")",
    "eval(\"__import__('os').system('touch {marker}')\")",
    "1+__import__('os').system('touch {marker}')",
    "open('{marker}', 'w').write('x')",
    "getattr(__builtins__, 'exec')('import os')",
]
PLACEMENTS = {
    "bare prediction": lambda payload: (payload, "0"),
    "boxed prediction": lambda payload: ("\\boxed{" + payload + "}", "0"),
    "bare gold": lambda payload: ("0", payload),
    "boxed gold": lambda payload: ("0", "\\boxed{" + payload + "}"),
    "both": lambda payload: (payload, payload),
}


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("payload", INJECTIONS)
def test_code_in_an_answer_is_never_run_and_never_equivalent(payload, placement, tmp_path):
    marker = tmp_path / "ttc_pwned"
    pred, gold = PLACEMENTS[placement](payload.format(marker=marker))
    started = time.monotonic()
    assert is_equivalent(pred, gold) is False
    assert time.monotonic() - started < 5.0
    assert not marker.exists()


@pytest.mark.parametrize("payload", INJECTIONS)
def test_math_verify_itself_evaluates_no_identifier_from_the_answer(payload, tmp_path, monkeypatch):
    """Behind our own guard: math-verify 0.9 hands sympy's eval only digits, operators and number tokens."""
    import math_verify
    import sympy.parsing.sympy_parser as sympy_parser

    evaluated = []
    real_eval_expr = sympy_parser.eval_expr

    def recording_eval_expr(code, local_dict, global_dict):
        evaluated.append(code if isinstance(code, str) else "<compiled code>")
        return real_eval_expr(code, local_dict, global_dict)

    monkeypatch.setattr(sympy_parser, "eval_expr", recording_eval_expr)
    marker = tmp_path / "ttc_pwned"
    text = payload.format(marker=marker)
    gold = math_verify.parse("\\boxed{0}", parsing_timeout=None)
    for wrapped in (text, "\\boxed{" + text + "}", "$" + text + "$", "The final answer is " + text):
        for config in (math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()):
            parsed = math_verify.parse(wrapped, extraction_config=[config], parsing_timeout=None)
            math_verify.verify(gold, parsed, timeout_seconds=None)
    assert not marker.exists()
    for code in evaluated:
        assert not any(name in code for name in ("import", "__", "system", "exec", "eval", "open")), code


# Inputs that would run for minutes or exhaust memory if evaluated; the guards or the deadline stop them.
PATHOLOGICAL = [
    ("9^9^9^9^9", "5"),
    ("10**10**10", "5"),
    ("9^{9^{9^{9}}}", "9^{9^{9^{8}}}"),
    ("100000!", "5"),
    ("(123456)!", "5"),
    ("2^{1234567}", "3^{1234567}"),
    ("1e99999999", "1"),
    ("{" * 5000 + "1" + "}" * 5000, "1"),
    ("(" * 300 + "1" + ")" * 300, "2"),
    ("1" * 1_000_000, "2"),
    ("(x+y+z)^{999}", "(x+y+z+1)^{999}"),
    (r"\sin(x)^{200}+\cos(x)^{200}", "1"),
    (r"\sum_{n=1}^{99999} n^{n}", "1"),
]
TIMEOUT_S = 1.0


@pytest.mark.parametrize(("pred", "gold"), PATHOLOGICAL, ids=lambda value: value[:24])
def test_a_pathological_answer_is_decided_within_the_timeout(pred, gold):
    started = time.monotonic()
    assert is_equivalent(pred, gold, timeout_s=TIMEOUT_S) is False
    assert time.monotonic() - started < TIMEOUT_S + 1.0


def test_a_pathological_answer_is_decided_within_the_timeout_in_a_worker_thread():
    verdicts = {}

    def grade_in_thread():
        for pred, gold in PATHOLOGICAL[-3:]:
            started = time.monotonic()
            verdicts[pred] = (is_equivalent(pred, gold, timeout_s=TIMEOUT_S), time.monotonic() - started)
        verdicts["sane"] = (is_equivalent("0.5", r"\frac{1}{2}", timeout_s=TIMEOUT_S), 0.0)

    worker = threading.Thread(target=grade_in_thread)
    worker.start()
    worker.join(timeout=3 * (TIMEOUT_S + 1.0) + 5.0)
    assert not worker.is_alive()
    assert verdicts.pop("sane")[0] is True
    for pred, (verdict, seconds) in verdicts.items():
        assert verdict is False, pred
        assert seconds < TIMEOUT_S + 1.0, pred


def test_grading_still_works_after_a_timeout():
    assert is_equivalent("(x+y+z)^{999}", "(x+y+z+1)^{999}", timeout_s=0.3) is False
    assert is_equivalent("0.5", r"\frac{1}{2}") is True
    assert is_equivalent("x^2+2x+1", "(x+1)^2") is True


def test_identical_pathological_answers_are_still_equivalent_as_text():
    assert is_equivalent("9^9^9^9^9", "9^{9^{9^{9^{9}}}}") is False
    assert is_equivalent("9^9^9^9^9", " 9^9^9^9^9 ") is True


def test_the_deadline_restores_the_callers_alarm_handler_and_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert call_with_deadline(lambda: time.sleep(5), 0.2, on_timeout="timed out") == "timed out"
        assert call_with_deadline(lambda: "done", 1.0, on_timeout="timed out") == "done"
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < remaining <= 30.0
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_deadline_interrupts_work_in_a_worker_thread_and_leaves_it_usable():
    results = []

    def spin_for_ten_seconds():  # pure Python: an exception can land between its bytecodes
        end = time.monotonic() + 10
        while time.monotonic() < end:
            pass
        return "spun"

    def work():
        results.append(call_with_deadline(spin_for_ten_seconds, 0.2, on_timeout="timed out"))
        time.sleep(0.2)  # a late re-fire of the deadline would land here
        results.append(call_with_deadline(lambda: "done", 1.0, on_timeout="timed out"))

    worker = threading.Thread(target=work)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=5.0)
    assert results == ["timed out", "done"]
    assert time.monotonic() - started < 2.0
