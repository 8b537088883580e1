"""The embedded local stack: AWS emulated on one machine, the same code paths as in the cloud."""
