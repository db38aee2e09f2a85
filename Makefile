# make demo: the whole product on the BBC corpus. make test: what CI runs.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: venv demo stop test test-unit test-e2e benchmarks

venv: $(STAMP)

# Reinstall only when requirements.txt changes; pip's cache (~/.cache/pip) makes a reinstall fast.
$(STAMP): requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: venv
	scripts/demo.sh

stop:
	scripts/demo.sh stop

# Unit and integration tests: real MLflow server, real uvicorn, real MiniLM training on a CPU.
test: venv
	$(PYTHON) -m pytest -m "not e2e"

test-unit: venv
	$(PYTHON) -m pytest -m "not e2e and not integration"

# End-to-end tests on a local DolphinScheduler 3.2.2 standalone server (scripts/dolphinscheduler.sh).
test-e2e: venv
	$(PYTHON) -m pytest -m e2e

benchmarks: venv
	$(PYTHON) benchmarks/train_throughput.py
	$(PYTHON) benchmarks/serve_throughput.py
