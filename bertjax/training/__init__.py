"""Pretraining and fine-tuning: train state, the shared update and loop steps, optimizers, checkpoints."""
