"""Framework-free helpers shared by the Jittor and PyTorch sides."""
