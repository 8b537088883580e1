"""Retraining: launching SageMaker training jobs for dataset versions (launch.py) and turning a
finished job into a registered, gated model version (completion.py).
"""
