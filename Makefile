# PromptProxy: `make serve` starts the server, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HTTP ?= 127.0.0.1:8090

.PHONY: serve test test-postgresql test-fast lint bench screenshots clean

# Two stamps: `serve` needs only what the image installs, the tests add the dev tools.
$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

serve: $(BIN)/.runtime  ## start PromptProxy on $(HTTP), data in pb_data/
	$(BIN)/python app.py serve --http $(HTTP)

test: $(BIN)/.dev  ## the whole suite, browser, load and packaging tests included
	$(BIN)/python -m pytest

test-postgresql: $(BIN)/.dev  ## the whole suite again, on a PostgreSQL server of its own (needs initdb)
	PROMPTPROXY_TEST_DATABASE=postgresql $(BIN)/python -m pytest

test-fast: $(BIN)/.dev  ## everything but the slow tests
	$(BIN)/python -m pytest -m "not slow"

lint: $(BIN)/.dev  ## ruff, with the settings in pyproject.toml
	$(BIN)/ruff check .

screenshots: $(BIN)/.dev  ## retake the README's screenshots into docs/img/ (the browser test)
	SCREENSHOTS_DIR=docs/img $(BIN)/python -m pytest tests/test_admin_browser.py

clean:
	rm -rf $(VENV) .pytest_cache

bench: $(BIN)/.dev  ## measure PromptProxy against direct; writes docs/benchmarks.md (needs wrk)
	$(BIN)/python bench/run.py
