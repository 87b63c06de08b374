# Every target creates the virtual environment it needs: on a fresh machine,
# `make demo` and `make test` are the only commands to type.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A prediction client written by someone else, in its own environment, as a real
# client would run it (tritonclient pins protobuf < 7; the platform uses 7).
CLIENT_VENV := .venv-client
CLIENT_STAMP := $(CLIENT_VENV)/.installed
# The federation (Flower server and site agent) in its own environment: flwr pins
# protobuf < 7 and older fastapi, typer and rich. It reaches services/federation through a
# .pth file and its own code generated from protos/ (never the platform's, built for protobuf 7).
# MLServer, the peer bench/serving.py measures serving against, in its own environment
# (its FastAPI and uvloop pins are not the platform's).
MLSERVER_VENV := .venv-mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed
FED_VENV := .venv-federation
FED_BIN := $(FED_VENV)/bin
FED_STAMP := $(FED_VENV)/.installed
FED_PROTOS := protos/mlops/v1/model.proto protos/mlops/v1/events.proto
PYTEST_ARGS ?=

.PHONY: venv client-venv mlserver-venv federation-venv observability-tools browser-tools proto proto-check lint format test test-faults test-fast test-browser screenshots up demo bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(CLIENT_STAMP): tests/clients/requirements.lock
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet -r tests/clients/requirements.lock
	touch $(CLIENT_STAMP)

client-venv: $(CLIENT_STAMP)

$(MLSERVER_STAMP): bench/mlserver-requirements.lock
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet -r bench/mlserver-requirements.lock
	touch $(MLSERVER_STAMP)

mlserver-venv: $(MLSERVER_STAMP)

$(FED_STAMP): services/federation/requirements.lock $(FED_PROTOS)
	$(PYTHON) -m venv $(FED_VENV)
	$(FED_BIN)/pip install --quiet --upgrade pip
	$(FED_BIN)/pip install --quiet -r services/federation/requirements.lock
	rm -rf $(FED_VENV)/proto && mkdir -p $(FED_VENV)/proto
	$(FED_BIN)/python -m grpc_tools.protoc --plugin=protoc-gen-mypy=$(FED_BIN)/protoc-gen-mypy \
	  --proto_path=protos --python_out=$(FED_VENV)/proto --mypy_out=$(FED_VENV)/proto $(FED_PROTOS)
	touch $(FED_VENV)/proto/mlops/__init__.py $(FED_VENV)/proto/mlops/v1/__init__.py $(FED_VENV)/proto/mlops/py.typed
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/$(FED_VENV)/proto" \
	  > "$$($(FED_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mlops-federation.pth"
	touch $(FED_STAMP)

federation-venv: $(FED_STAMP)

## Debian's prometheus: promtool checks the Prometheus config, and an end-to-end test
## scrapes the local stack with the real server. Installed once, when absent.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
observability-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

## Debian's chromium: the console's browser tests drive it with Playwright's Python API
## (Playwright's own browser download cannot work here). Installed once, when absent.
browser-tools:
	@command -v chromium >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

## Regenerate the checked-in protobuf and gRPC code from protos/.
proto: venv
	$(BIN)/python protos/generate.py

## Fail when the checked-in generated code differs from what protos/ generates.
proto-check: venv
	rm -rf .proto-check && $(BIN)/python protos/generate.py .proto-check
	diff -r -q services/common/proto .proto-check && rm -rf .proto-check

lint: venv federation-venv
	$(BIN)/ruff check services tests bench protos
	$(BIN)/ruff format --check services tests bench protos
	$(BIN)/mypy
	$(FED_BIN)/mypy --config-file services/federation/mypy.ini

format: venv
	$(BIN)/ruff check --fix services tests bench protos
	$(BIN)/ruff format services tests bench protos

## Lint, types, unit, integration and end-to-end tests: all but the slow fault tests
## (services and infrastructure killed, cut off or restarted: six to seven minutes), which CI runs too.
test: venv client-venv federation-venv observability-tools browser-tools lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -m "not faults" $(PYTEST_ARGS)

## The fault tests: services and infrastructure killed, cut off from the network or restarted under load.
test-faults: venv
	OMP_NUM_THREADS=1 $(BIN)/pytest -m faults $(PYTEST_ARGS)

## Everything but the end-to-end closed loop.
test-fast: venv observability-tools browser-tools
	OMP_NUM_THREADS=1 $(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

## The console in a real headless browser.
test-browser: venv browser-tools
	OMP_NUM_THREADS=1 $(BIN)/pytest -m browser $(PYTEST_ARGS)

## Screenshots of the console's main pages into docs/console/, taken by its browser tests.
screenshots: venv browser-tools
	CONSOLE_SCREENSHOTS=docs/console OMP_NUM_THREADS=1 $(BIN)/pytest -m browser -q tests/integration/console/test_browser.py

## The local stack on the embedded broker and database, until Ctrl-C.
up: venv
	OMP_NUM_THREADS=1 $(BIN)/mlops up

## The closed loop, end to end, on the running local stack or a fresh one.
demo: venv
	OMP_NUM_THREADS=1 $(BIN)/mlops demo

bench: venv mlserver-venv
	OMP_NUM_THREADS=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(CLIENT_VENV) $(MLSERVER_VENV) $(FED_VENV) .proto-check .mlops .pytest_cache .mypy_cache .ruff_cache
