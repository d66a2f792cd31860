"""sim: differentiable FluidLab-style physics environments on NVIDIA Warp."""
