"""The input-pipeline case: augmented, batched training samples per second (in this process: no model runs)."""

import pathlib

from benchmarks.measure import median_seconds


def pipeline_rate(source, skeleton, input_size=256, batch_size=8, batches=20, repeats=3, num_stacks=2):
    """Augmented, batched training pipeline throughput (images/s) over ``batches`` batches."""
    from hourglass_tf.data import pipeline

    dataset = pipeline.make_dataset(source.repeat(), skeleton, num_stacks, batch_size, input_size=input_size, seed=0)
    iterator = iter(dataset)

    def consume():
        for _ in range(batches):
            next(iterator)

    seconds = median_seconds(consume, repeats)
    return {
        "images_per_s": batches * batch_size / seconds,
        "seconds": seconds,
        "repeats": repeats,
        "batch_size": batch_size,
        "input_size": input_size,
        "batches": batches,
    }


def pipeline_sources(work_dir, shared_data, input_size, quick):
    """{name: (source, skeleton)}: synthetic JPEG files generated into ``work_dir`` (kept), and LSPET TFRecord
    shards written there when ``shared_data`` holds ``lspet/``."""
    from hourglass_tf.data import pipeline, readers, synthetic, tfrecords

    syn_root = pathlib.Path(work_dir) / "synthetic"
    if not (syn_root / "annot" / "train.json").exists():
        synthetic.generate(syn_root, num_train=64 if quick else 256, num_valid=0, image_size=256, seed=0)
    samples = readers.load_dataset("synthetic", syn_root, "train")
    sources = {
        "synthetic (JPEG files)": (pipeline.samples_to_dataset(samples, syn_root), readers.skeleton_of("synthetic"))
    }
    if shared_data is None or not (pathlib.Path(shared_data) / "lspet" / "joints.mat").exists():
        return sources
    shard_dir = pathlib.Path(work_dir) / f"lspet_tfr_{input_size}{'_quick' if quick else ''}"
    if not (shard_dir / "meta.json").exists():
        lspet = readers.load_dataset("lspet", pathlib.Path(shared_data) / "lspet", "train")
        lspet = lspet[:512] if quick else lspet
        report = tfrecords.write_shards(
            lspet, pathlib.Path(shared_data) / "lspet", shard_dir, "train", input_size, progress=False
        )
        tfrecords.write_meta(shard_dir, {"dataset": "lspet", "num_joints": 14, "splits": {"train": report.as_dict()}})
    sources["LSPET (TFRecord shards)"] = (tfrecords.read_shards(shard_dir, "train", 14), readers.skeleton_of("lspet"))
    return sources
