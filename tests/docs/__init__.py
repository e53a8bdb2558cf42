"""The examples of README.md and docs/ run as written."""
