"""Helpers for the tests: waiting on conditions, a TCP proxy to cut connections, an SMTP server, tokens."""
