"""The streaming worker: per-partition processing (`partition`), stored state (`state`), output records
(`records`) and settings (`config`). The Faust app that drives them is `processor.app`."""
