"""Run inside a virtualenv with SageMaker's PyTorch inference toolkit and TorchServe, as a model
server worker of the inference image would: install code/requirements.txt with the toolkit's own
function, then load the model and answer requests through the toolkit's HandlerService with
TorchServe's own Context. Prints one JSON line per request: the answer body and its content type.

Usage: python endpoint_worker.py REQUEST_JSON [REQUEST_JSON ...]   (SAGEMAKER_BASE_DIR set)
"""

import json
import os
import sys

from sagemaker_inference import environment, model_server  # the toolkit's paths, from SAGEMAKER_BASE_DIR

model_server._install_requirements()  # what the server does before starting: pip install -r code/requirements.txt
# The server puts code/ on the workers' PYTHONPATH (torchserve._set_python_path); this is the worker.
sys.path.insert(0, environment.code_dir)

from sagemaker_pytorch_serving_container.handler_service import HandlerService  # noqa: E402
from ts.context import Context, RequestProcessor  # noqa: E402

context = Context("model", environment.model_dir, {}, 1, None, "0.12.0")
service = HandlerService()
service.initialize(context)
for body in sys.argv[1:]:
    context.request_processor = [RequestProcessor({"Content-Type": "application/json", "Accept": "application/json"})]
    (answer,) = service.handle([{"body": body.encode()}], context)
    status = context.request_processor[0].get_response_status_code()
    content_type = context.request_processor[0].get_response_header("content-type")
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    print(json.dumps({"status": status, "content_type": content_type, "body": text, "pid": os.getpid()}))
