"""Training that is neither JAX nor torch: the loop skeleton (Loop), logs, plots, NaN dump
layout, class weights, validation and the training command both frameworks run."""
