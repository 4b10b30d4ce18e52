# The two commands of the README: `make demo` (set up and run on the embedded default)
# and `make test` (the whole suite). Everything else is a convenience.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo serve test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/castiel-sync demo

serve: $(STAMP)
	$(BIN)/castiel-sync serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/castiel_sync
	$(BIN)/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) data
