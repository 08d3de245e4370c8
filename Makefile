# PromptProxy: `make serve` starts the server, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HTTP ?= 127.0.0.1:8090

.PHONY: serve test test-fast bench screenshots clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

serve: $(BIN)/.installed  ## start PromptProxy on $(HTTP), data in pb_data/
	$(BIN)/python app.py serve --http $(HTTP)

test: $(BIN)/.installed  ## the whole suite, browser and load tests included
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed  ## everything but the slow tests
	$(BIN)/python -m pytest -m "not slow"

screenshots: $(BIN)/.installed  ## retake the README's screenshots into docs/img/ (the browser test)
	$(BIN)/python -m pytest tests/test_admin_browser.py

clean:
	rm -rf $(VENV) .pytest_cache

bench: $(BIN)/.installed  ## measure PromptProxy against direct; writes docs/benchmarks.md (needs wrk)
	$(BIN)/python bench/run.py
