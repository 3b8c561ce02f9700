# The two commands of the README: `make run` starts the whole system, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test install browser lint bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python scripts/run_local.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# tests/e2e/test_docs_browser.py loads the /docs pages in headless Chromium (Debian's package)
browser:
	@command -v chromium >/dev/null || { echo "installing Chromium (Debian package) for the docs-page browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# two workers (pytest-xdist), each test file on one of them: the suite mostly waits on PostgreSQL, RabbitMQ and the
# services (user CPU ~3.5 of ~10 minutes on the 2-core CI machine), so two halve it; every test has its own
# databases, AMQP prefix, ports and roles, and each worker its own template databases
test: install browser lint
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

bench: install
	$(BIN)/python bench/run.py

soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache .mypy_cache
