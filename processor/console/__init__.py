"""`ccmeter console`: a read-only web console and an HTTP API (OpenAPI 3.1) over a snapshot."""
