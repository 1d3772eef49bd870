# The two commands a new user runs: `make demo` and `make test`. Both build .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev,plc,web]'
	touch $@

demo: venv
	$(BIN)/afrd demo

test: venv
	$(BIN)/python scripts/fetch_test_assets.py
	$(BIN)/ruff check afrd tests bench scripts
	$(BIN)/ruff format --check afrd tests bench scripts
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache
