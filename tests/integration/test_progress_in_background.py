"""The progress artifact updated off the batch loop's thread (`tasks/progress_in_background.py`), against a
real Prefect server: the artifact ends at the last figure set, and a refused update never reaches the loop."""

from __future__ import annotations

import pytest

from tasks.progress_in_background import ProgressInBackground

pytestmark = [pytest.mark.alone, pytest.mark.usefixtures("prefect_server")]


def test_the_artifact_ends_at_the_last_figure_set() -> None:
    from prefect import flow
    from prefect.artifacts import create_progress_artifact
    from prefect.client.orchestration import get_client

    @flow
    def sends() -> object:
        artifact_id = create_progress_artifact(0.0, key="progress-in-background", description="test")
        with ProgressInBackground(artifact_id) as progress:
            for done in range(1, 201):
                progress.set(done / 2)
        return artifact_id

    artifact_id = sends()
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        ours = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert len(ours) == 1 and ours[0].data == 100.0


def test_a_failing_server_call_never_reaches_the_caller() -> None:
    """Progress is a courtesy: an update the server refuses (no such artifact) is logged, not raised."""
    from uuid import uuid4

    with ProgressInBackground(uuid4(), close_timeout=30) as progress:
        progress.set(50.0)
    assert not progress.running
