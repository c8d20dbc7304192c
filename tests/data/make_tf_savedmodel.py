"""Write ``tf_savedmodel/`` and ``tf_savedmodel_expected.npz``: a genuine TensorFlow SavedModel fixture.

Run once, by hand, in a separate environment that has TensorFlow (Chorus never imports it)::

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfenv/bin/python tests/data/make_tf_savedmodel.py

The variables follow the released Perch 2.0 export: a list attribute ``_tf_var_leaves`` holding the
Flax leaves in lexicographically sorted path order, which TensorFlow saves as
``_tf_var_leaves/<N>/.ATTRIBUTES/VARIABLE_VALUE``. The network is tiny (stem conv + BatchNorm +
swish, mean pool, dense), but the bundle is TF's own writer's output: its SSTable index, block
layout, CRCs and data file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
# (Flax path, shape), sorted as jax.tree_util flattens a dict: batch_stats before params
LEAVES = sorted(
    [
        ("batch_stats/Stem_0/BatchNorm_0/mean", (4,)),
        ("batch_stats/Stem_0/BatchNorm_0/var", (4,)),
        ("params/Stem_0/BatchNorm_0/bias", (4,)),
        ("params/Stem_0/BatchNorm_0/scale", (4,)),
        ("params/Stem_0/Conv_0/kernel", (3, 3, 1, 4)),  # HWIO
        ("params/Head_0/Dense_0/bias", (3,)),
        ("params/Head_0/Dense_0/kernel", (4, 3)),
    ]
)


def main() -> None:
    rng = np.random.default_rng(15)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _, shape in LEAVES]
    arrays[1] = np.abs(arrays[1]) + 0.5  # a variance
    module = tf.Module()
    module._tf_var_leaves = [tf.Variable(a) for a in arrays]
    by_path = {path: v for (path, _), v in zip(LEAVES, module._tf_var_leaves, strict=True)}

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 8], tf.float32)])
    def embed(logmel: tf.Tensor) -> tf.Tensor:
        x = tf.nn.conv2d(logmel[..., None], by_path["params/Stem_0/Conv_0/kernel"], 2, "VALID")
        mean, var = (by_path[f"batch_stats/Stem_0/BatchNorm_0/{k}"] for k in ("mean", "var"))
        scale, bias = (by_path[f"params/Stem_0/BatchNorm_0/{k}"] for k in ("scale", "bias"))
        x = tf.nn.silu((x - mean) * tf.math.rsqrt(var + 1e-5) * scale + bias)
        pooled = tf.reduce_mean(x, axis=(1, 2))
        return (
            pooled @ by_path["params/Head_0/Dense_0/kernel"] + by_path["params/Head_0/Dense_0/bias"]
        )

    module.embed = embed
    out = HERE / "tf_savedmodel"
    tf.saved_model.save(module, str(out), signatures={"serving_default": embed})
    expected = {f"_tf_var_leaves/{n}/.ATTRIBUTES/VARIABLE_VALUE": a for n, a in enumerate(arrays)}
    np.savez(HERE / "tf_savedmodel_expected.npz", **expected)
    (HERE / "tf_savedmodel_leaves.txt").write_text("".join(f"{p}\n" for p, _ in LEAVES))
    print(f"wrote {out} with TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
