"""Transport harnesses for tests and benches (peer processes, rogue peers); never used by a node."""
