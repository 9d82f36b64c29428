"""Shared fixtures: the shared data folder and real Mosquitto brokers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mosquitto import MosquittoBroker, mosquitto_binary
from tests.support.shared import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared third-party data; tests that need it skip with a reason when absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set EDGETL_SHARED_DATA)")
    return path


@pytest.fixture
def broker(tmp_path):
    """A fresh Mosquitto on a free port, stopped after the test."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (tools/test.sh installs it)")
    b = MosquittoBroker(workdir=tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory(tmp_path):
    """Make brokers with custom config (TLS, passwords, ACLs); all stopped after the test."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed (tools/test.sh installs it)")
    made: list[MosquittoBroker] = []

    def make(**kwargs) -> MosquittoBroker:
        kwargs.setdefault("workdir", tmp_path / f"broker{len(made)}")
        b = MosquittoBroker(**kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real but tiny run folder (3 generated shape classes, 96 px, MobileNetV2 0.35), trained once."""
    from tests.support.runs import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_export_run(tmp_path_factory) -> Path:
    """A seconds-to-train run folder (32 px colour classes, small CNN) for export/quantization tests."""
    from tests.support.tiny_export_run import make_run

    return make_run(tmp_path_factory.mktemp("tiny_export_run"))


@pytest.fixture(scope="session")
def patch_model():
    """(model, history): a small nested-backbone CNN trained on the coloured-patch task (Grad-CAM tests)."""
    from tests.support.patch_task import train_model

    return train_model()


@pytest.fixture(scope="session")
def patch_run(tmp_path_factory, patch_model) -> Path:
    """A run folder of the patch task (some real val mistakes) for visualisation and report tests."""
    from tests.support.patch_task import write_run

    return write_run(tmp_path_factory.mktemp("patch_run"), *patch_model)
