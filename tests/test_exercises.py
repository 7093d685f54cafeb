import rlhf_edu
from rlhf_edu.core.exercises import check, check_close, hint


def test_check_prints_verdict_and_returns_it(capsys):
    assert check(True, "well done", "try again") is True
    assert check(False, "well done", "look at eq. 3") is False
    assert capsys.readouterr().out.splitlines() == ["✅ well done", "❌ not yet: run hint() for a hint"]


def test_check_close_uses_absolute_tolerance(capsys):
    assert check_close(0.30001, 0.3, "hint")
    assert not check_close(0.31, 0.3, "hint", tol=1e-3)
    capsys.readouterr()
    hint()
    assert "got 0.31" in capsys.readouterr().out


def test_show_returns_highlighted_source():
    code = rlhf_edu.show(check)
    assert "def check(" in code.data


def test_unanswered_exercise_keeps_its_hint_for_hint(capsys):
    assert check_close(None, 0.3, "fill in `answer`") is False
    assert "fill in" not in capsys.readouterr().out
    hint()
    assert capsys.readouterr().out.strip() == "💡 fill in `answer`"
    assert not check_close(0.31, 0.3, "look again", tol=1e-3)
    capsys.readouterr()
    hint()
    assert capsys.readouterr().out.strip() == "💡 look again (got 0.31)"


def test_hint_prints_only_when_called(capsys):
    check(False, "right", "the sum of the log-ratios")
    assert "the sum" not in capsys.readouterr().out
    hint("a hint of its own")
    assert capsys.readouterr().out == "💡 a hint of its own\n"
