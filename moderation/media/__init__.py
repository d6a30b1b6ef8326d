"""Safe media fetching and decoding."""
