"""Every flagfile under flags/ parses with the binary it is written for."""
import glob
import os

import pytest
from absl import flags

import lt_keras.bin.early_bird  # noqa: F401
import lt_keras.bin.imp  # noqa: F401  (defines the IMP and common flags)
import lt_keras.bin.supermask  # noqa: F401
import lt_keras.bin.train  # noqa: F401
from tests.conftest import REPO

FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.flags")))


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses(path, monkeypatch):
    monkeypatch.chdir(REPO)  # flagfiles include each other by repo-relative path
    values = flags.FLAGS
    try:
        values(["prog", f"--flagfile={path}"])
        assert values.model and values.dataset
        assert (values.train_steps is None) or (values.epochs is None)
    finally:
        values.unparse_flags()


def test_there_are_paper_flagfiles():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"quickstart.flags", "lenet300_mnist_imp.flags", "conv2_cifar10_imp.flags", "conv4_cifar10_imp.flags",
            "conv6_cifar10_imp.flags", "lenet300_mnist_supermask.flags",
            "lenet300_mnist_supermask_signed_constant.flags", "conv4_cifar10_supermask.flags",
            "conv6_cifar10_edgepopup.flags", "vgg16_cifar100_early_bird.flags",
            "resnet20_cifar10_early_bird_cpu.flags", "vgg16_cifar10_eb.flags",
            "vgg11_cifar10_eb_quick.flags", "vgg11_cifar10_eb_quick_int8.flags"} <= names
