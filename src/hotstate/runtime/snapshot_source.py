"""The download side of store snapshots (issue #9): the changelog reader's ``SnapshotSource`` over the snapshot
package's ``Restorer``, built by the stream thread when ``snapshot_store`` is set.

The rule (issue 9): a store partition downloads a snapshot only when it has no usable local state, or when its
local changelog offset is older than a snapshot's by more than ``acceptable_recovery_lag``. So the threshold
given to ``Restorer.fetch`` is ``local_offset + acceptable_recovery_lag``: snapshots at or below it are not
downloaded, and the store reads its changelog from its own offset instead.

Downloads stage under ``<state_dir>/<app_id>/.snapshot-staging`` (``staging_dir``): on the stores' filesystem,
so adopting the verified files is a rename. The directory is emptied when the stream thread starts (a process
that died mid-download leaves files there). The object store is opened lazily, on the first fetch, and again
on a later fetch if that failed: a store that cannot be opened or reached never stops the app; the restore
reads the changelog instead, with a warning (the Restorer's, or this module's).
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from ..config import Config, redact
from ..errors import SnapshotStoreError
from ..observe.metrics import SnapshotMetrics
from ..observe.rate_limited import RateLimitedLog
from ..records import TopicPartition
from ..snapshot import ObjectStore, Restorer
from .snapshot_download import SnapshotFetched

log = logging.getLogger(__name__)

STAGING_DIR_NAME = ".snapshot-staging"


def prepare_staging_dir(app_root: str) -> str:
    """``<app_root>/.snapshot-staging``, emptied (what a dead process left there goes) and created."""
    path = os.path.join(app_root, STAGING_DIR_NAME)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    return path


class RestorerSource:
    """``SnapshotSource`` for the changelog reader: ``Restorer.fetch`` with the recovery-lag threshold."""

    def __init__(self, config: Config, metrics: SnapshotMetrics, concurrency: int = 4):
        if config.snapshot_store is None:
            raise ValueError("snapshot_store is not set: no snapshot source")
        self._config = config
        self._metrics = metrics
        self._concurrency = concurrency
        self._restorer: Restorer | None = None
        self._lock = threading.Lock()
        self._warn = RateLimitedLog(log)

    def _get_restorer(self) -> Restorer | None:
        with self._lock:
            if self._restorer is None:
                cfg = self._config
                try:
                    # create=False: a restore never makes a file:// store's directory (an unmounted volume
                    # would look like an empty store); the uploader does.
                    objects = ObjectStore.open(cfg.snapshot_store, cfg.snapshot_store_options, create=False)
                except (SnapshotStoreError, OSError) as exc:
                    self._warn.warning("open", "the snapshot store %s cannot be opened (%s); restores read the "
                                       "changelog", redact(str(cfg.snapshot_store)), exc)
                    return None
                self._restorer = Restorer(objects, cfg.app_id, concurrency=self._concurrency,
                                          metrics=self._metrics)
            return self._restorer

    def fetch(self, store_name: str, changelog_partition: TopicPartition, local_offset: int | None,
              into: Path) -> SnapshotFetched | None:
        restorer = self._get_restorer()
        if restorer is None:
            return None
        threshold = None if local_offset is None else local_offset + self._config.acceptable_recovery_lag
        fetched = restorer.fetch(store_name, changelog_partition.partition, threshold, into)
        if fetched is None:
            return None
        return SnapshotFetched(fetched.offset, fetched.num_bytes, fetched.seconds)
