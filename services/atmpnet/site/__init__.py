"""Site publishing: the SitePublisher SDK, its durable outbox, the HTTP ingest gateway, the simulator."""
