"""Self-contained seed studies (small reproductions run through ``study: <dotted path>``)."""
