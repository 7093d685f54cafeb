import rlhf_edu
from rlhf_edu.exercises import check, check_close


def test_check_prints_verdict_and_returns_it(capsys):
    assert check(True, "well done", "try again") is True
    assert check(False, "well done", "look at eq. 3") is False
    assert capsys.readouterr().out.splitlines() == ["✅ well done", "❌ not yet: look at eq. 3"]


def test_check_close_uses_absolute_tolerance(capsys):
    assert check_close(0.30001, 0.3, "hint")
    assert not check_close(0.31, 0.3, "hint", tol=1e-3)
    assert "got 0.31" in capsys.readouterr().out


def test_show_returns_highlighted_source():
    code = rlhf_edu.show(check)
    assert "def check(" in code.data


def test_unanswered_exercise_gets_the_hint(capsys):
    assert check_close(None, 0.3, "fill in `answer`") is False
    assert capsys.readouterr().out.strip() == "❌ not yet: fill in `answer`"


def test_hint_prints_only_when_called(capsys):
    from rlhf_edu.exercises import hint

    check(False, "right", "see hint() below")
    assert "the sum" not in capsys.readouterr().out
    hint("the sum of the log-ratios")
    assert capsys.readouterr().out == "💡 the sum of the log-ratios\n"
