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
	$(BIN)/python -m pip install -q -e '.[train,dev,plc,web,mqtt]'
	touch $@

demo: venv
	$(BIN)/afrd demo

# The operator page's browser test drives Debian's chromium (about 30 s to install on a fresh
# machine), the MQTT tests Debian's mosquitto broker; without apt-get or root they skip and say so.
test: venv
	$(BIN)/python scripts/fetch_test_assets.py
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    chromium chromium-driver >/dev/null ) || echo "chromium not installed: tests/test_web_browser.py will skip"
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
	  ( command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    mosquitto >/dev/null ) || echo "mosquitto not installed: the MQTT tests will skip"
	$(BIN)/ruff check afrd tests bench scripts
	$(BIN)/ruff format --check afrd tests bench scripts
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache
