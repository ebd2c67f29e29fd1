"""Clairvora API: a Python Worker on Cloudflare D1."""
