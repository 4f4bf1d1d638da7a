"""Keys, peer ids, signing and the signed envelope: the bottom layer, importing nothing of swarm."""
