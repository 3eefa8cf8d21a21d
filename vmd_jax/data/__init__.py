"""The data layer: synthetic token sets, a user's .npy token sequences, and deterministic batches."""
