# ccmeter: every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_STAMP := tools/kafka/lib/.resolved

.PHONY: install test lint demo kafka kafka-secure kafka-jars browser bench schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

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

lint: install
	$(BIN)/ruff check .

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

clean:
	rm -rf $(VENV) tools/kafka/lib tools/kafka/target demo-output .pytest_cache .ruff_cache .cache
