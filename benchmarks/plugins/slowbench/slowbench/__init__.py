"""slowbench: a prediction that takes ~50 ms (see slowbench.api)."""
