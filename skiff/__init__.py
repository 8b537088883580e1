"""Skiff: serverless model operations for text classifiers.

This package is the torch-free core shared by training, serving, the Lambda functions,
the infrastructure program and the CLI. Nothing in it may import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
