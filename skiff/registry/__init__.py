"""The model registry: versions, the production alias and its history in DynamoDB (table.py),
artifacts on S3 (artifacts.py), the quality gate (gate.py) and rollback on alarm (auto_rollback.py).
"""
