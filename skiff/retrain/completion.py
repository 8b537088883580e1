"""What happens when a training job ends (EventBridge "SageMaker Training Job State Change").

Completed: fetch model.tar.gz, verify the artifact against its manifest, publish it, register
a candidate with its lineage, run the quality gate, then promote or reject with the reason.
Failed / Stopped: register a failed version with SageMaker's FailureReason; production is
untouched. Either way, free the training slot and start the newest waiting dataset version.

Duplicate events are harmless: a job always maps to the same version id, so a repeated event
finds its version and does only what is left (a crash between registering and gating resumes
at the gate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff import settings as env
from skiff.aws import LazyClient
from skiff.data.dataset import in_eval_split
from skiff.data.versions import DatasetCatalog
from skiff.errors import ArtifactError, ConflictError, NotFoundError
from skiff.model.artifact import MODEL_INT8, SERVING_FILES, ModelArtifact, load_artifact
from skiff.model.predictor import Predictor
from skiff.notify import Notice
from skiff.registry.artifacts import ArtifactStore, parse_s3_uri
from skiff.registry.gate import GateDecision, GateSettings, UnloadableProduction, decide
from skiff.registry.table import CANDIDATE, FAILED, Registry, metrics_summary, new_version_id
from skiff.retrain.launch import TrainingJobSettings, TrainingScheduler
from skiff.serve.gpu_endpoint import GpuEndpoint, follow_production
from skiff.serve.lambda_alias import InferenceAlias, follow_alias

log = logging.getLogger(__name__)

FINAL_STATES = ("Completed", "Failed", "Stopped")


@dataclass(frozen=True)
class CompletionSettings:
    registry_table: str
    data_bucket: str
    jobs: TrainingJobSettings
    gate: GateSettings = field(default_factory=GateSettings)
    work_dir: Path = Path("/tmp/skiff-completion")
    # How long this function waits for a new published inference version to become active (a
    # SnapStart snapshot takes minutes) before it leaves the alias where it is; within its timeout.
    alias_wait_seconds: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CompletionSettings:
        e = os.environ if environ is None else environ
        return cls(
            registry_table=env.require("SKIFF_REGISTRY_TABLE", e),
            data_bucket=env.require("SKIFF_DATA_BUCKET", e),
            jobs=TrainingJobSettings.from_env(e),
            gate=GateSettings.from_env(e),
            work_dir=Path(e.get("SKIFF_WORK_DIR") or "/tmp/skiff-completion"),
            alias_wait_seconds=env.number("SKIFF_COMPLETION_ALIAS_WAIT_SECONDS", 600.0, e),
        )


@dataclass(frozen=True)
class CompletionOutcome:
    job_name: str
    status: str  # "promoted", "rejected", "failed", "duplicate", "ignored"
    version: str | None = None
    reason: str | None = None
    gate: GateDecision | None = None
    next_job: str | None = None

    def notice(self) -> Notice | None:
        """What subscribers hear about this outcome (nothing for repeats and others' jobs)."""
        event = {"promoted": "candidate-promoted", "rejected": "candidate-rejected", "failed": "training-failed"}
        if self.status not in event:
            return None
        what = {
            "promoted": f"{self.version} promoted to production",
            "rejected": f"{self.version} rejected by the quality gate; production unchanged",
            "failed": f"training job {self.job_name} failed; production unchanged",
        }[self.status]
        details: dict[str, Any] = {"version": self.version, "training_job": self.job_name, "reason": self.reason}
        if self.gate is not None:
            details["gate"] = self.gate.to_dict()
        if self.next_job:
            details["next_job"] = self.next_job
        return Notice(event[self.status], what, details)


def job_version_id(job_name: str, created: datetime) -> str:
    return new_version_id(created, hashlib.sha256(job_name.encode()).hexdigest()[:4])


def _created(detail: Mapping[str, Any]) -> datetime:
    raw = detail.get("CreationTime")
    if isinstance(raw, datetime):
        return raw.astimezone(UTC)
    if raw is not None:
        return datetime.fromtimestamp(int(float(raw)) / 1000, UTC)  # EventBridge: epoch milliseconds
    raise ArtifactError("expected CreationTime in the training job event (got: none)")


def safe_extract(archive: Path, target: Path) -> None:
    """Unpack model.tar.gz refusing links, devices and paths that escape ``target``."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")


class TrainingCompletion:
    sagemaker = LazyClient("sagemaker")

    def __init__(
        self,
        settings: CompletionSettings,
        registry: Registry | None = None,
        store: ArtifactStore | None = None,
        catalog: DatasetCatalog | None = None,
        scheduler: TrainingScheduler | None = None,
        sagemaker: Any = None,
        gpu_endpoint: GpuEndpoint | None = None,
        inference_alias: InferenceAlias | None = None,
    ) -> None:
        self.settings = settings
        self.gpu_endpoint = gpu_endpoint
        self.inference_alias = inference_alias
        self.registry = registry or Registry(settings.registry_table)
        self.store = store or ArtifactStore(settings.jobs.artifacts_bucket)
        self.catalog = catalog or DatasetCatalog(settings.registry_table, settings.data_bucket)
        self.scheduler = scheduler or TrainingScheduler(settings.registry_table, settings.jobs)
        self.sagemaker = sagemaker

    def handle(self, detail: Mapping[str, Any]) -> CompletionOutcome:
        job_name = detail["TrainingJobName"]
        status = detail["TrainingJobStatus"]
        dataset_version = self.settings.jobs.dataset_version_of(job_name)
        if dataset_version is None:
            return CompletionOutcome(job_name, "ignored", reason="not a job of this stack")
        if status not in FINAL_STATES:
            return CompletionOutcome(job_name, "ignored", reason=f"status {status} is not final")
        if "CreationTime" not in detail:
            detail = {**detail, **self.sagemaker.describe_training_job(TrainingJobName=job_name)}
        version = job_version_id(job_name, _created(detail))
        lineage = {"dataset_version": dataset_version, "training_job": job_name}
        try:
            if status == "Completed":
                outcome = self._completed(job_name, version, detail, lineage)
            else:
                outcome = self._failed(job_name, version, status, detail, lineage)
        finally:
            # Whatever happened to this job, the slot is free for the next dataset version.
            following = self.scheduler.finish(job_name)
        return CompletionOutcome(**{**vars(outcome), "next_job": following.job_name if following else None})

    def _failed(
        self, job_name: str, version: str, status: str, detail: Mapping[str, Any], lineage: dict[str, Any]
    ) -> CompletionOutcome:
        reason = f"training job {status.lower()}: {detail.get('FailureReason') or 'no FailureReason given'}"
        try:
            self.registry.register(
                version=version,
                status=FAILED,
                status_reason=reason,
                artifact_uri=None,
                manifest_sha256=None,
                metrics={},
                lineage=lineage,
                actor="training-events",
            )
        except ConflictError:
            return CompletionOutcome(job_name, "duplicate", version, reason)
        log.warning("%s; production untouched", reason, extra={"training_job": job_name, "model_version": version})
        return CompletionOutcome(job_name, "failed", version, reason)

    def _completed(
        self, job_name: str, version: str, detail: Mapping[str, Any], lineage: dict[str, Any]
    ) -> CompletionOutcome:
        work = Path(tempfile.mkdtemp(prefix="job-", dir=_ensure(self.settings.work_dir)))
        try:
            try:
                existing = self.registry.get(version)
            except NotFoundError:
                existing = None
            if existing is not None and existing.status != CANDIDATE:
                return CompletionOutcome(job_name, "duplicate", version, existing.status_reason)
            if existing is None:
                try:
                    artifact = self._download(detail, job_name, work / "model")
                except ArtifactError as exc:
                    return self._failed(
                        job_name, version, "Failed", {"FailureReason": f"artifact refused: {exc}"}, lineage
                    )
                published = self.store.publish(artifact.directory, version)
                manifest = artifact.manifest
                self.registry.register(
                    version=version,
                    artifact_uri=published.uri,
                    manifest_sha256=published.manifest_sha256,
                    metrics=metrics_summary(artifact.metrics()),
                    model_family=manifest.get("model_family", "bag"),
                    lineage={
                        **lineage,
                        "hyperparameters": manifest.get("hyperparameters", {}),
                        "code_version": manifest.get("code_version"),
                        "dataset_fingerprint": manifest.get("dataset", {}).get("fingerprint"),
                        "model_artifacts": detail.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
                        # a distilled model's teacher (training/distillation.py), else None
                        "teacher": manifest.get("lineage", {}).get("teacher"),
                    },
                    actor="training-events",
                )
            else:  # registered by an earlier delivery that stopped before the gate
                artifact = self.store.fetch(
                    existing.artifact_uri or "", work / "model", manifest_sha256=existing.manifest_sha256
                )
            decision = self._gate(artifact, lineage["dataset_version"], work)
            if decision.promote:
                self.registry.promote(version, decision.reason, actor="quality-gate")
                self.follow_production()
                return CompletionOutcome(job_name, "promoted", version, decision.reason, decision)
            self.registry.reject(version, decision.reason, actor="quality-gate")
            return CompletionOutcome(job_name, "rejected", version, decision.reason, decision)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def follow_production(self) -> None:
        """Move what follows the registry: the inference alias (this function may wait for a
        SnapStart snapshot) and the GPU endpoint. Both no-ops where the stack has none."""
        # Still pending after all that: announced, so this function tries again on the event.
        follow_alias(self.registry, self.inference_alias, self.settings.alias_wait_seconds)
        follow_production(self.registry, self.gpu_endpoint)

    def _download(self, detail: Mapping[str, Any], job_name: str, target: Path) -> ModelArtifact:
        uri = (detail.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if not uri:  # the documented sample event lacks it; real Completed events carry it
            described = self.sagemaker.describe_training_job(TrainingJobName=job_name)
            uri = described["ModelArtifacts"]["S3ModelArtifacts"]
        bucket, key = parse_s3_uri(uri)
        archive = target.parent / "model.tar.gz"
        self.store.s3.download_file(bucket, key, str(archive))
        try:
            safe_extract(archive, target)
        except (tarfile.TarError, OSError) as exc:
            raise ArtifactError(f"expected a readable model.tar.gz at {uri} (got: {exc})") from exc
        return load_artifact(target)

    def _gate(self, artifact: ModelArtifact, dataset_version: str, work: Path) -> GateDecision:
        eval_fraction = float(artifact.manifest.get("hyperparameters", {}).get("eval_fraction", 0.2))
        evaluation = [e for e in self.catalog.examples(dataset_version) if in_eval_split(e.text, eval_fraction)]
        candidate = Predictor(artifact, MODEL_INT8)
        production: tuple[str, Predictor] | UnloadableProduction | None = None
        current = self.registry.production()
        if current is not None:
            try:
                fetched = self.store.fetch(
                    current.artifact_uri or "",
                    work / "production",
                    only=SERVING_FILES,
                    manifest_sha256=current.manifest_sha256,
                )
                production = (current.version, Predictor(fetched))
            except ArtifactError as exc:
                log.error("production %s cannot be loaded: %s", current.version, exc)
                recorded = (current.metrics or {}).get(self.settings.gate.metric)
                production = UnloadableProduction(current.version, str(exc), recorded)
        metrics = json.loads(artifact.path("metrics.json").read_text(encoding="utf-8"))
        return decide(candidate, production, evaluation, self.settings.gate, bool(metrics["parity"]["passed"]))


def _ensure(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory
