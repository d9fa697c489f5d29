"""Alert delivery: `ccmeter alerts deliver` POSTs the records of the alerts topic to a webhook.

- processor/alerts/webhook.py: the request (body, idempotency key, HMAC signature), the retry policy, one POST;
- processor/alerts/deliver.py: the Kafka side (own consumer group, offsets committed after each delivery);
- processor/cli/alerts.py: the command line.
"""
