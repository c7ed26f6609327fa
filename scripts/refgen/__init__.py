"""Reference-set generators, one module per stage. Each exposes generate(ctx: RefContext)."""
