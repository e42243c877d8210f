"""Dataset sources that yield ready batches for the trainer."""
