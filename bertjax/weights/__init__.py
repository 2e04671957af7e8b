"""Model weights: parameter trees, the Hugging Face mapping, model checkpoints and their conversion."""
