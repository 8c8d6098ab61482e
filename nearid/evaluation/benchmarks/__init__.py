"""One module per benchmark: what it reads, which similarities it needs, and how they become metrics."""
