"""DuckDB snapshots: the Kafka-to-Parquet sink, consistent snapshot files, and reports and charts from them."""
