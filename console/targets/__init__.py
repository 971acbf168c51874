"""Target values, target sets and scopes, and the typed result records derived from them."""
