"""The dock's pages, each over the shared session."""
