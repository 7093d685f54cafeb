"""The notebooks' exercises, checked by id: the reader's cell holds the answer, this package holds the rest.

    from rlhf_edu.exercises import check, check_function, hint, predict

    check("07.2", answer)                  # a value, against one computed here from the library
    check_function("08.1", my_kl_estimate)  # a function, against the library's on many inputs, case by case
    predict("04.4", prediction)             # a prediction, noted before the run; the check says if it held
    hint()                                  # the last exercise's next hint: a nudge, then the equation and its terms

Each notebook's exercises are declared in its own module (``ch08.py`` for ``08_regularization.ipynb``, ``trl.py``
for ``graduate_to_trl.ipynb``, whose ids are "trl.1", …): the expected values, the cases and the hints, so that a
notebook shows no answer. This floor imports any other; nothing in the package imports it.
"""

from .checks import Case, Exercise, Prediction, check, check_function, exercise, hint, passed, predict

__all__ = ["Case", "Exercise", "Prediction", "check", "check_function", "exercise", "hint", "passed", "predict"]
