"""Labelled data: reading and validating CSV files (dataset.py), immutable dataset versions on
S3 built from accepted uploads (versions.py), and the demo's synthetic data (synthetic.py).
"""
