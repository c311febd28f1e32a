"""The owner of data_dir/artifacts: each job's kept files, under its id (DESIGN's storage
layout). The scheduler has a host collect into a job's directory, the API serves from it
and retention deletes it, all through `Artifacts`; which files a job kept is the store's
to say, never a listing of this directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO


class Artifacts:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes  # per job, over its artifacts and its JUnit reports

    def of(self, job_id: int) -> Path:
        """Where the job's files go, under their workspace paths."""
        return self.directory / str(job_id)

    def open(self, job_id: int, path: str) -> BinaryIO:
        """One of the job's files, by a path the store lists (callers check that first);
        OSError if it is no longer kept."""
        return (self.of(job_id) / path).open("rb")

    def delete(self, job_id: int) -> None:
        shutil.rmtree(self.of(job_id), ignore_errors=True)
