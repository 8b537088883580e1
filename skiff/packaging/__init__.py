"""What ships to AWS: Lambda function zips and their layer, and the training and GPU-serving
source bundles (bundle.py).
"""
