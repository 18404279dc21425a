"""Evaluation on Tinker: recall, belief depth, capabilities, sampling, graders."""
