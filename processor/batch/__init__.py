"""The independent batch engine (DuckDB SQL): `processor.batch.engine.BatchEngine`."""
