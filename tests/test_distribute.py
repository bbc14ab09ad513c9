"""The strategy and precision decisions for 0, 1 and several GPUs, and CPUs with and without bfloat16 (mocked)."""

import pytest

from hourglass_tf import distribute, runtime

GPU = object()  # stands for a tf.config.PhysicalDevice: only the list's length and truth matter


@pytest.mark.parametrize(
    "name, gpus, replicas, expected",
    [
        ("auto", 0, 0, "default"),
        ("auto", 1, 0, "default"),
        ("auto", 4, 0, "mirrored"),
        ("one_device", 0, 0, "one_device_cpu"),
        ("one_device", 1, 0, "one_device_gpu"),
        ("mirrored", 0, 0, "mirrored"),
        ("mirrored", 8, 0, "mirrored"),
        ("auto", 0, 2, "cpu_mirrored"),
        ("mirrored", 2, 3, "cpu_mirrored"),
    ],
)
def test_strategy_plan_for_each_device_count(name, gpus, replicas, expected):
    assert distribute.strategy_plan(name, gpus, replicas) == expected


def test_multi_worker_needs_a_cluster_and_unknown_strategies_are_refused():
    assert distribute.strategy_plan("multi_worker", 2, tf_config='{"cluster": {}}') == "multi_worker"
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.strategy_plan("multi_worker", 2)
    with pytest.raises(ValueError, match="strategy='horovod'"):
        distribute.strategy_plan("horovod", 1)


def _details(*capabilities):
    """A stand-in for tf.config.experimental.get_device_details over GPUs 0, 1, ... with these capabilities."""
    table = dict(enumerate(capabilities))
    return lambda gpu: {"device_name": "mocked", **({"compute_capability": table[gpu]} if table[gpu] else {})}


def test_precision_policy_and_whether_it_pays():
    assert distribute.mixed_precision_policy(gpus=[]) == "mixed_bfloat16"  # CPU or TPU
    volta, ampere, hopper = (7, 0), (8, 0), (9, 0)
    assert distribute.mixed_precision_policy(gpus=[0], details=_details(volta)) == "mixed_float16"
    assert distribute.mixed_precision_policy(gpus=[0], details=_details(ampere)) == "mixed_bfloat16"
    assert distribute.mixed_precision_policy(gpus=[0, 1], details=_details(hopper, ampere)) == "mixed_bfloat16"
    # one older GPU among them: float16 with loss scaling for all (one policy per run)
    assert distribute.mixed_precision_policy(gpus=[0, 1], details=_details(ampere, (7, 5))) == "mixed_float16"
    assert distribute.mixed_precision_policy(gpus=[0], details=_details(None)) == "mixed_float16"  # unknown: safe
    assert distribute.gpu_capabilities(gpus=[0, 1], details=_details((8, 6), None)) == [(8, 6), (0, 0)]
    assert distribute.mixed_precision_pays(gpus=[GPU], flags=set())  # float16 on any GPU
    assert distribute.mixed_precision_pays(gpus=[], flags={"avx2", "avx512_bf16"})
    assert distribute.mixed_precision_pays(gpus=[], flags={"amx_bf16"})
    assert not distribute.mixed_precision_pays(gpus=[], flags={"avx2", "avx512f"})  # bfloat16 emulated: slower
    pays, reason = distribute.mixed_precision_choice(gpus=[], flags={"avx2", "fma"})
    assert not pays and reason.startswith("off (float32") and "avx512_bf16" in reason
    assert distribute.mixed_precision_choice(gpus=[], flags={"amx_bf16"}) == (
        True,
        "on (mixed_bfloat16: this CPU has bfloat16 arithmetic)",
    )


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 avx512f\nbugs\t: none\n")
    assert runtime.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "avx512f"}
    assert runtime.cpu_flags(tmp_path / "absent") == set()


def test_the_tpu_branch_connects_initialises_and_builds_the_strategy(monkeypatch):
    import tensorflow as tf

    calls = []

    class Resolver:
        def __init__(self):
            calls.append("resolver")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", Resolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", type(r))))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("init", type(r))))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: ("tpu strategy", type(r)))
    assert distribute.make_strategy("tpu") == ("tpu strategy", Resolver)
    assert calls == ["resolver", ("connect", Resolver), ("init", Resolver)]


def test_training_data_is_sharded_across_several_workers_and_not_rewritten_on_one():
    import tensorflow as tf

    class Resolver:
        def __init__(self, cluster):
            self.cluster = cluster

        def cluster_spec(self):
            return tf.train.ClusterSpec(self.cluster)

    class Strategy:
        def __init__(self, cluster):
            self.cluster_resolver = Resolver(cluster)

    assert distribute.worker_count(tf.distribute.get_strategy()) == 1
    assert distribute.worker_count(Strategy({})) == 1
    assert distribute.worker_count(Strategy({"worker": ["a:1", "b:1"]})) == 2
    assert distribute.worker_count(Strategy({"chief": ["c:1"], "worker": ["a:1", "b:1"], "ps": ["p:1"]})) == 3
    policy = tf.data.experimental.AutoShardPolicy
    dataset = tf.data.Dataset.range(4)
    shard = {
        w: distribute.dataset_options(dataset, w).options().experimental_distribute.auto_shard_policy for w in (1, 3)
    }
    assert shard == {1: policy.OFF, 3: policy.DATA}
    for workers in (0, True, 1.0):
        with pytest.raises(ValueError, match=f"received workers={workers!r}"):
            distribute.dataset_options(dataset, workers)
