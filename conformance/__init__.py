"""Conformance suite: checks that an engine yields the canonical AutoDeco distribution."""
