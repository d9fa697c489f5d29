"""ccmeter replay: archive, publish, plan, rebuild (run), restate and verify from the event log."""
