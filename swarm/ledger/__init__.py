"""The replicated state machine and its durable chain: state, apply, reputation, server optimizer, the
rules of an entry, the one replay loop (restart and audit), the store, evidence and the offline audit."""
