"""The tensor-bundle reader against a SavedModel that TensorFlow itself wrote (tests/data/).

The fixture was written once by ``tests/data/make_tf_savedmodel.py`` in a separate environment with
TensorFlow; the expected arrays are what that script handed to TensorFlow, saved beside it as .npz.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from embedder.weights import BundleError, read_bundle, read_tensors

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "tf_savedmodel"
DATA_FILE = Path("variables") / "variables.data-00000-of-00001"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "tf_savedmodel_expected.npz") as z:
        return {k: z[k] for k in z.files}


def test_reader_returns_exactly_what_tensorflow_wrote(expected):
    got = read_bundle(FIXTURE)
    leaves = {k: v for k, v in got.items() if k.startswith("_tf_var_leaves/")}
    assert sorted(leaves) == sorted(expected)  # nothing lost, nothing invented
    for name, array in expected.items():
        assert leaves[name].dtype == array.dtype and leaves[name].shape == array.shape, name
        np.testing.assert_array_equal(leaves[name], array, err_msg=name)
    # the generic entry point takes the folder, its variables/ folder or the .index file
    for path in (FIXTURE, FIXTURE / "variables", FIXTURE / "variables" / "variables.index"):
        np.testing.assert_array_equal(
            read_tensors(path)["_tf_var_leaves/4/.ATTRIBUTES/VARIABLE_VALUE"],
            expected["_tf_var_leaves/4/.ATTRIBUTES/VARIABLE_VALUE"],
        )


def test_leaf_numbers_follow_sorted_flax_paths():
    paths = (DATA / "tf_savedmodel_leaves.txt").read_text().split()
    assert paths == sorted(paths) and paths[0].startswith("batch_stats/")
    got = read_bundle(FIXTURE)
    conv = paths.index("params/Stem_0/Conv_0/kernel")
    assert got[f"_tf_var_leaves/{conv}/.ATTRIBUTES/VARIABLE_VALUE"].shape == (3, 3, 1, 4)


def test_a_damaged_copy_is_rejected_naming_the_tensor(tmp_path, expected):
    copy = shutil.copytree(FIXTURE, tmp_path / "sm")
    name = "_tf_var_leaves/4/.ATTRIBUTES/VARIABLE_VALUE"
    data = bytearray((copy / DATA_FILE).read_bytes())
    # located by content, not by our own index parser: the reader is what is under test
    offset = bytes(data).find(expected[name].tobytes())
    assert offset >= 0 and bytes(data).count(expected[name].tobytes()) == 1
    data[offset + 5] ^= 0x40
    (copy / DATA_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"checksum mismatch for tensor '{name}'"):
        read_bundle(copy)
    # without verification the damage goes through: the CRC is what caught it
    assert not np.array_equal(read_bundle(copy, verify=False)[name], expected[name])


def test_a_truncated_data_file_is_rejected_naming_a_tensor(tmp_path):
    copy = shutil.copytree(FIXTURE, tmp_path / "sm")
    data = (copy / DATA_FILE).read_bytes()
    # the float tensors come first; TF's object-graph string fills the rest of the file
    (copy / DATA_FILE).write_bytes(data[:64])
    with pytest.raises(BundleError, match=r"tensor '_tf_var_leaves/\d+/.*' lies past the end"):
        read_bundle(copy)
