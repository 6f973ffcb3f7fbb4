"""`python -m jaxbrr.data`: the data command, kept under its first name. The pipeline itself is
framework-neutral and lives in common/data/ (it imports neither JAX nor torch)."""
