"""The contract suite (issue 17): the same SPEC scenarios and generated histories against every implementation (the
pure fold, the worker's partition driver, the DuckDB engine); see docs/architecture.md, section 5."""
