# The two commands that must work on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint zapc-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hanzocloud iam demo --dev
	$(BIN)/hanzocloud --dev --enable=all

test: $(STAMP)
	$(BIN)/python -m hanzocloud.zap check
	$(BIN)/python -m pytest -p no:randomly
	# The same iam, kms, base and gateway suites against the split deployment:
	# iam+kms in one host, base in another, calling each other over ZAP on loopback.
	CLOUD_TEST_SPLIT=1 $(BIN)/python -m pytest -p no:randomly tests/iam tests/kms tests/base tests/gateway

bench: $(STAMP)
	for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check src subsystems tests bench
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) build *.egg-info
