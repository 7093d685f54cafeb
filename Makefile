# One command to set up and open the notebooks (`make lab`), one to set up and test everything (`make test`).
# Override VENV to use another environment, e.g. `make test VENV=/path/to/venv`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
NOTEBOOKS := $(wildcard notebooks/*.ipynb notebooks/solutions/*.ipynb)

.PHONY: lab test unit notebooks lint figures zoo doctor clean

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

test: $(VENV)/.installed
	$(PYTHON) -m pytest tests
	$(PYTHON) -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider notebooks

unit: $(VENV)/.installed
	$(PYTHON) -m pytest tests

# Re-execute every notebook in place, top to bottom, keeping widget state so the saved file shows them.
notebooks: $(VENV)/.installed
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.store_widget_state=True $(NOTEBOOKS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check rlhf_edu tests benchmarks

figures: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu figures --out images

zoo: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu zoo build

doctor: $(VENV)/.installed
	$(VENV)/bin/rlhf-edu doctor

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
