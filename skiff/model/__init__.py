"""The model core: featurization, hyperparameters, self-describing artifacts, the onnxruntime
predictor and classification metrics. Shared by training, serving and the gate; numpy only.
"""
