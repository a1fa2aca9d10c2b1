"""Planning: composing the config and turning it into one checked Plan before any weight loads."""
