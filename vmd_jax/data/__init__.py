"""The data layer: tfds builders for the synthetic token sets, a user's .npy token sequences, Sudoku
(generated puzzles and files) and text (text8, a user's corpus), read without TensorFlow, and the
deterministic, resumable batches of pipeline.py."""
