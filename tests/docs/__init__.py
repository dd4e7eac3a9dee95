"""The documentation's code blocks run as written."""
