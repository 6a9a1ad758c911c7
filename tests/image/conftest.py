"""The image tests run only where an image is named: `make image-test` builds and names one."""

from __future__ import annotations

import os
from pathlib import Path

from tests.image.kubelet import IMAGE_ENV


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    # `make test` walks tests/; these need root, buildah and a built image (minutes to build),
    # so only `make image-test` (which sets IMAGE_ENV) collects them.
    if collection_path.name.startswith("test_") and not os.environ.get(IMAGE_ENV):
        return True
    return None
