"""The domain: models, mapping and conflict rules. Knows nothing of HTTP, SQL or brokers."""
