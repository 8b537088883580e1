"""Which instance types run on instance storage (SageMaker refuses a volume KMS key for them)."""

from __future__ import annotations

import pytest

from skiff.aws import has_instance_storage


@pytest.mark.parametrize(
    "instance_type",
    [
        "ml.g5.xlarge",
        "ml.g6e.2xlarge",
        "ml.g4dn.xlarge",
        "ml.p3dn.24xlarge",
        "ml.p4de.24xlarge",
        "ml.p5.48xlarge",
        "ml.m5d.large",
        "ml.c6id.xlarge",
        "ml.trn1.2xlarge",
    ],
)
def test_instance_types_with_nvme_storage_are_recognised(instance_type: str) -> None:
    assert has_instance_storage(instance_type)


@pytest.mark.parametrize(
    "instance_type",
    ["ml.m5.xlarge", "ml.c5.2xlarge", "ml.p3.2xlarge", "ml.t3.medium", "ml.c5n.xlarge", "ml.inf2.xlarge"],
)
def test_instance_types_with_an_ebs_volume_are_not(instance_type: str) -> None:
    assert not has_instance_storage(instance_type)
