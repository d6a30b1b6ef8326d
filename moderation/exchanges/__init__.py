"""Moving bank entries in and out: files (formats), hash exchanges (stopncii,
ncmec) and the sync loop that applies exchange updates to a bank (sync).

Nothing here touches the database directly: sync talks to the small
``ExchangeStore`` / ``FeedbackOutbox`` protocols that the storage layer implements.
See docs/exchanges.md.
"""
