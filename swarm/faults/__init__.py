"""Deliberate misbehaviour for tests, benches and demos: attack profiles and the adversary that plays them."""
