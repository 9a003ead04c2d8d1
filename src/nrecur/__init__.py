"""nrecur: a laboratory for in-context probabilistic inference in small transformers."""
