"""Serving: the Lambda inference core (inference.py), HTTP plumbing shared by the API handlers
(http.py), and the optional GPU endpoint (gpu_endpoint.py) with its SageMaker handler.
"""
