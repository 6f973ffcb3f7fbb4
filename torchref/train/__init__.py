"""Training pieces of the PyTorch reference: loss, optimizer and schedule, one train step."""
