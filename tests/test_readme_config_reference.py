"""The README's device configuration reference is exactly what the pydantic models say."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_config_reference_matches_models():
    tool = _tool()
    readme = (ROOT / "README.md").read_text()
    assert tool.section() in readme, "README config reference is stale: run `python tools/config_reference.py --write`"


def test_reference_covers_every_section_and_required_key():
    text = _tool().reference()
    for key in ("device_id", "camera.source", "model.bundle", "motion.enabled", "decision.k",
                "recording.pre_roll", "storage.min_free_mb", "mqtt.host", "mqtt.tls.ca_file"):
        assert f"`{key}`" in text
    assert "**required**" in text
