"""One gradient's path through a round, in order: made, compressed, encoded, signed, verified, pooled."""
