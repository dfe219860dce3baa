"""Test suite of gorkheavy-lite."""
