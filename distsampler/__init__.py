"""distsampler: class-imbalance samplers for PyTorch DDP, one global seeded plan per epoch."""
