"""Adapters: public datasets mapped into the canonical fleet dataset layout."""
