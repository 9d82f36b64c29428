"""A device records for weeks: what a saved clip leaves in memory must not grow with the number of clips.

Found by tools/soak_device.py: fds, threads and the outbox stay flat, but every saved clip's ClipInfo (paths,
objects, labels: ~3 KB) stayed referenced for the life of the process, only to be counted in the status.
"""

from __future__ import annotations

import gc

from edgetl_device.config import DeviceConfig
from edgetl_device.recording import ClipInfo
from edgetl_device.runtime import Runtime


def test_saved_clips_are_not_kept_in_memory(shared_data, tmp_path):
    # Real parts: vtest.avi decoded by OpenCV, the Coral MobileNetV2 through TFLite, clips encoded to disk.
    # vtest's hall reads as "warplane, military plane" in bursts: several clips in one pass of the file.
    data_dir = tmp_path / "data"
    cfg = DeviceConfig.model_validate({
        "device_id": "clip-memory",
        "camera": {"source": str(shared_data / "videos/vtest.avi")},
        "model": {"path": str(shared_data / "models/mobilenet_v2_1.0_224_quant.tflite"),
                  "labels": str(shared_data / "models/imagenet_labels.txt"), "num_threads": 1},
        "decision": {"record_unknown": False, "unknown_threshold": 1.0,
                     "record_classes": ["warplane, military plane"], "k": 2, "n": 4},
        "recording": {"pre_roll": 1.0, "post_roll": 1.0, "max_clip": 10.0, "cooldown": 1.0},
        "storage": {"data_dir": str(data_dir), "min_free_mb": 1},
    })
    runtime = Runtime(cfg)
    status = runtime.run()

    saved = sorted((data_dir / "clips").glob("*.json"))  # the sidecar marks a clip complete
    assert len(saved) >= 5, "vtest should trigger several clips; the test measures nothing otherwise"
    assert status["clips_written"] == len(saved)

    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, ClipInfo) and data_dir in o.video_path.parents]
    assert runtime.recorder is not None  # the runtime (and its recorder) is still alive, as on a device
    assert not kept, (f"{len(kept)} of {len(saved)} saved clips are still held in memory; on a device that "
                      "records for weeks this grows without bound")
