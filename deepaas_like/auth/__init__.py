"""Keys and access: who is calling (tokens, JWTs), what they may do (scopes, per-model roles)."""
