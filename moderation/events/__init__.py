"""Event contracts, Kafka consumer loop, producers and dead letters."""
