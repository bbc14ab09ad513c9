"""The photo-to-poses case: people per second in one photo, and tracked video frames per second end to end."""

import contextlib
import math
import os
import pathlib
import tempfile
import time

from benchmarks.measure import current_rss_mb, median_seconds

LSPET_SIZE = {"num_stacks": 2, "num_blocks": 1, "filters": 128, "depth": 3, "input_size": 96, "num_joints": 14}


@contextlib.contextmanager
def _cache_folder(folder):
    """``litert_cache``'s folder set to ``folder`` for the block (this case's own), the environment restored after."""
    from hourglass_tf import litert_cache

    before = os.environ.get(litert_cache.ENVIRONMENT)
    os.environ[litert_cache.ENVIRONMENT] = str(folder)
    try:
        yield
    finally:
        if before is None:
            del os.environ[litert_cache.ENVIRONMENT]
        else:
            os.environ[litert_cache.ENVIRONMENT] = before


def _tracked_video(predictor, video, box, frames):
    """One tracked person through ``frames`` frames (detector every 30, One-Euro filter): frames/s, detector runs
    and the process's memory at frame 20 and at the end (flat: no growth per frame)."""
    from hourglass_tf import people, tracking

    detector = people.PoseEstimator(predictor, lambda frame: box[None])
    tracker = tracking.Tracker(detector, detect_every=30, lost_score=-math.inf)  # random weights: never "lost"
    for t in range(3):  # compile
        tracker(video[t], t / 25)
    tracker = tracking.Tracker(detector, detect_every=30, lost_score=-math.inf)
    rss = {}
    start = time.perf_counter()
    for t in range(frames):
        tracker(video[t], t / 25)
        if t in (19, frames - 1):
            rss[t + 1] = current_rss_mb()
    seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "frames_per_second": frames / seconds,
        "detector_runs": tracker.detector_runs,
        "rss_mb_at_frame_20": rss.get(20),
        "rss_mb_at_end": rss.get(frames),
        "runtime": predictor.runtime,
    }


def people_case(repeats=5, people_counts=(1, 4, 8), frames=200, frame_size=(480, 640)):
    """The photo-to-poses path with the LSPET-size model (random weights, flip test) on the runtime ``predict.py``
    runs a float32 ``.keras`` model on (LiteRT, through a conversion made here in a temporary cache folder):
    people per second for 1, 4 and 8 people in one 640 x 480 image (crop, network, decode, back-projection), and
    end-to-end video frames per second for one tracked person (detector every 30 frames, One-Euro filter), with
    the process's memory at frame 20 and at the end; the video once more on TensorFlow (``--runtime=tensorflow``)."""
    import numpy as np

    from hourglass_tf import metadata, people, skeleton
    from hourglass_tf.data.synthetic import render_video
    from hourglass_tf.inference import Predictor
    from hourglass_tf.model import build_model

    model = build_model(**LSPET_SIZE)
    with tempfile.TemporaryDirectory(prefix="people_case.") as work:
        path = pathlib.Path(work) / "lspet_size.keras"
        metadata.save_keras(model, path, metadata.describe(model, skeleton.LSP))
        with _cache_folder(work):
            predictor = Predictor.from_file(path, runtime="auto", log=lambda message: None)
        on_tensorflow = Predictor.from_file(path, runtime="tensorflow")
        estimator = people.PoseEstimator(predictor, "whole_image")
        image = np.random.default_rng(0).integers(0, 256, (*frame_size, 3), dtype=np.uint8)
        boxes = np.random.default_rng(1).uniform([0, 0, 60, 120], [500, 300, 140, 180], (max(people_counts), 4))
        out = {"model": LSPET_SIZE, "runtime": predictor.runtime, "people": {}}
        for n in people_counts:
            seconds = median_seconds(lambda n=n: estimator.estimate(image, boxes[:n]), repeats)
            out["people"][str(n)] = {"seconds": seconds, "people_per_s": n / seconds}
        video, truth = render_video(seed=0, num_frames=frames, image_size=frame_size, num_people=1)
        box = people.box_of_keypoints(np.column_stack([truth[0, 0], np.ones(len(truth[0, 0]))]))
        out["video"] = {**_tracked_video(predictor, video, box, frames), "frame_size": list(frame_size[::-1])}
        out["video_tensorflow"] = _tracked_video(on_tensorflow, video, box, frames)
    return out
