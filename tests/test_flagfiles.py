"""Every flagfile under flags/ parses with the binary it is written for; every binary's flags are its configs'
fields (plus its own few), defined once."""
import dataclasses
import glob
import os
import subprocess
import sys

import pytest
from absl import flags

from lt_keras import options as config_flags
from lt_keras.data import DataConfig
from lt_keras.distribute import Devices
from lt_keras.duration import canonical, iterations
from lt_keras.early_bird import EarlyBirdConfig
from lt_keras.imp import ImpConfig
from lt_keras.precision import SearchPrecision
from lt_keras.methods import METHODS, ExportConfig, RetrainConfig
from lt_keras.supermask import LearnConfig, UntrainedConfig
from lt_keras.training import TrainConfig
from tests.conftest import REPO

FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.flags")))
# Binary -> the config dataclasses its flags come from, and the flags it defines itself.
BINARIES = {
    "train": ((DataConfig, TrainConfig, Devices), {"model", "output_dir"}),
    "imp": ((DataConfig, TrainConfig, SearchPrecision, Devices, ImpConfig), {"model", "output_dir"}),
    "supermask": ((DataConfig, TrainConfig, SearchPrecision, Devices, LearnConfig, UntrainedConfig),
                  {"model", "output_dir"}),
    "early_bird": ((DataConfig, TrainConfig, SearchPrecision, Devices, EarlyBirdConfig), {"model", "output_dir"}),
    "retrain": ((DataConfig, TrainConfig, Devices, RetrainConfig), {"model", "output_dir"}),
    "export": ((DataConfig, TrainConfig, ExportConfig), {"model", "saved_model_dir"}),
}


def binary_flags(name):
    """A fresh FlagValues holding exactly what ``lt_keras.bin.<name>`` defines (importing it defines nothing)."""
    values = flags.FlagValues()
    METHODS["lt-" + name.replace("_", "-")].define_flags(values)
    return values


def binary_for(path):
    name = os.path.basename(path)
    if "supermask" in name or "edgepopup" in name:
        return "supermask"
    if "early_bird" in name or "_eb" in name:
        return "early_bird"
    return "train" if "dense" in name else "imp"


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_with_its_binary(path, monkeypatch):
    monkeypatch.chdir(REPO)  # flagfiles include each other by repo-relative path
    values = binary_flags(binary_for(path))
    values(["prog", f"--flagfile={path}"])
    assert values.model and values.dataset
    assert (values.train_steps is None) or (values.epochs is None)


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_a_binarys_flags_are_its_configs_fields(name):
    configs, own = BINARIES[name]
    values = binary_flags(name)
    fields = {f.name for cls in configs for _, f in config_flags.flag_fields(cls)}
    assert set(values) == fields | own
    for cls in configs:  # and each flag's default is the field's default: written once, in the dataclass
        for _, field in config_flags.flag_fields(cls):
            default = values[field.name].default
            if isinstance(field.default, tuple):
                default = tuple(config_flags._item(field, v) for v in default) if default is not None else None
            elif field.metadata.get("duration"):  # a string flag; the config keeps the canonical value
                default = canonical(default, field.name)
            assert default == field.default, (name, field.name)
    assert all(f.name not in values for cls in configs for f in dataclasses.fields(cls)
               if (cls, f) not in config_flags.flag_fields(cls))


def test_two_binaries_in_one_process_keep_their_own_defaults():
    assert binary_flags("imp")["criterion"].default == ImpConfig.criterion == "large_final"
    assert binary_flags("supermask")["criterion"].default == UntrainedConfig.criterion == "large_final_same_sign"


def test_there_are_paper_flagfiles():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"quickstart.flags", "lenet300_mnist_imp.flags", "conv2_cifar10_imp.flags", "conv4_cifar10_imp.flags",
            "conv6_cifar10_imp.flags", "lenet300_mnist_supermask.flags",
            "lenet300_mnist_supermask_signed_constant.flags", "conv4_cifar10_supermask.flags",
            "conv6_cifar10_edgepopup.flags", "vgg16_cifar100_early_bird.flags",
            "resnet20_cifar10_early_bird_cpu.flags", "vgg16_cifar10_eb.flags",
            "vgg11_cifar10_eb_quick.flags", "vgg11_cifar10_eb_quick_int8.flags", "vgg19_cifar10_imp.flags",
            "vgg19_cifar10_imp_warmup.flags", "resnet20_cifar10_imp.flags",
            "resnet20_cifar10_imp_warmup.flags"} <= names


@pytest.mark.parametrize("network, warmup, rate", [("vgg19", 10000, 0.1), ("resnet20", 20000, 0.03)])
def test_warmup_flagfiles_differ_from_their_base_only_in_warmup(network, warmup, rate, monkeypatch):
    """Frankle & Carbin section 4: the deep networks with and without warmup, everything else the same."""
    monkeypatch.chdir(REPO)
    parsed = {}
    for suffix in ("", "_warmup"):
        values = binary_flags("imp")
        values(["prog", f"--flagfile=flags/{network}_cifar10_imp{suffix}.flags"])
        parsed[suffix] = {name: values[name].value for name in values}
        assert "Frankle & Carbin" in open(os.path.join(REPO, f"flags/{network}_cifar10_imp{suffix}.flags")).read()
    changed = {k for k in parsed[""] if parsed[""][k] != parsed["_warmup"][k]}
    assert changed <= {"warmup_steps", "learning_rate"}
    assert canonical(parsed[""]["warmup_steps"], "") == 0 and canonical(parsed["_warmup"]["warmup_steps"], "") == warmup
    assert parsed["_warmup"]["learning_rate"] == rate
    assert parsed[""]["prune_rate_output"] == 0.0 and parsed[""]["prune_rate_conv"] == 0.2


def test_the_dense_vgg11_recipe_is_the_early_bird_one_without_the_search(monkeypatch):
    """tools/reproduce_recipes.py compares runs of both flagfiles: the same training, decay points in iterations
    and in epochs."""
    monkeypatch.chdir(REPO)
    dense, eb = binary_flags("train"), binary_flags("early_bird")
    dense(["prog", "--flagfile=flags/vgg11_cifar10_full_dense_cpu.flags"])
    eb(["prog", "--flagfile=flags/vgg11_cifar10_full_eb_cpu.flags"])
    for name in dense:
        if name != "lr_decay_steps":
            assert dense[name].value == eb[name].value, name
    steps_per_epoch = TrainConfig(batch_size=dense["batch_size"].value).steps_per_epoch(
        50000 - dense["validation_size"].value)
    assert [iterations(p, "", steps_per_epoch) for p in dense["lr_decay_steps"].value] == [
        iterations(p, "", steps_per_epoch) for p in eb["lr_decay_steps"].value] == [40 * 703, 60 * 703]
    assert eb["lr_decay_steps"].value == ["40ep", "60ep"]


def test_library_errors_name_the_field_and_binaries_the_flag():
    from lt_keras import ConfigError
    from lt_keras.bin import runner

    with pytest.raises(ConfigError) as raised:
        ImpConfig(rounds=0)
    assert str(raised.value) == "rounds: must be >= 1, got 0." and raised.value.field == "rounds"
    with pytest.raises(SystemExit) as stopped:
        with runner.user_errors("lt-imp"):
            ImpConfig(rounds=0)
    assert stopped.value.code == "lt-imp: error: --rounds: must be >= 1, got 0."


@pytest.mark.parametrize("name, argv, message", [
    ("train", ["--dataset=imagenet"], "value should be one of"),
    ("train", ["--train_steps=2", "--epochs=1"], "give only one"),
    ("train", ["--batch_size=0"], "batch_size"),
    ("imp", ["--prune_rate_fc=abc"], "prune_rate_fc"),
    ("supermask", ["--estimator=both"], "value should be one of"),
    ("early_bird", ["--queue_length=1"], "queue_length"),
])
def test_flags_absl_refuses_while_parsing(name, argv, message):
    with pytest.raises(flags.Error, match=message):
        binary_flags(name)(["prog", *argv])


@pytest.mark.parametrize("build, message", [
    (lambda: ImpConfig(criterion="biggest"), "criterion: "),
    (lambda: ImpConfig(prune_rate_fc=1.5), "prune_rate_fc: "),
    (lambda: LearnConfig(keep_fraction=0), "keep_fraction: "),
    (lambda: UntrainedConfig(criterion="best"), "criterion: "),
    (lambda: UntrainedConfig(densities=(0.5, 0.0)), "densities: "),
    (lambda: EarlyBirdConfig(prune_ratios=(0.5, 1.5)), "prune_ratios: "),
    (lambda: SearchPrecision("int8", weight_bits=1), "weight_bits: "),
])
def test_configs_refuse_bad_values_naming_the_field(build, message):
    from lt_keras import ConfigError

    with pytest.raises(ConfigError, match=f"^{message}"):
        build()


def test_a_list_flag_with_a_bad_item_is_refused():
    from lt_keras import LtKerasError

    values = binary_flags("supermask")
    values(["prog", "--densities=0.5,abc"])
    with pytest.raises(LtKerasError, match="--densities: 'abc' is not a valid float"):
        config_flags.build(UntrainedConfig, values)
    values = binary_flags("imp")
    values(["prog", "--lr_decay_steps=100,200", "--lr_schedule=step", "--controls=random_prune"])
    assert config_flags.build(TrainConfig, values, train_steps=300).lr_decay_steps == (100, 200)
    assert config_flags.build(ImpConfig, values).controls == ("random_prune",)


def test_help_lists_the_binarys_own_flags():
    """--help / --helpshort show the binary's flags (its config fields and the common ones), not only
    --helpfull among absl's own."""
    out = subprocess.run([sys.executable, "-m", "lt_keras.bin.imp", "--helpshort"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ("--rounds", "--rewind", "--train_steps", "--steps_per_execution", "--precision", "--output_dir"):
        assert flag in out.stdout, flag
    assert "--logtostderr" not in out.stdout  # absl's own stay in --helpfull


def test_every_binarys_help_lists_the_common_flags():
    runs = {name: subprocess.Popen([sys.executable, "-m", f"lt_keras.bin.{name}", "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=REPO)
            for name in ("train", "imp", "supermask", "early_bird", "retrain", "export")}
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, err[-2000:])
        assert "--dataset" in out and "--data_dir" in out, name
        assert name == "export" or "--train_steps" in out, name  # lt-export trains nothing
        assert "--logtostderr" not in out and "--tpu" not in out and "--xla_" not in out, name  # absl's own


def test_every_module_is_an_attribute_after_import_lt_keras():
    import lt_keras

    root = os.path.join(REPO, "lt_keras")
    files = sorted([name[:-3] for name in os.listdir(root) if name.endswith(".py") and not name.startswith("_")]
                   + [name for name in os.listdir(root) if name != "bin"
                      and os.path.exists(os.path.join(root, name, "__init__.py"))])
    assert sorted(lt_keras.PUBLIC_MODULES) == files  # the API reference (tools/api_reference.py) documents these
    code = (f"import lt_keras\nfor m in {files!r}:\n    getattr(lt_keras, m)\n"
            "assert callable(lt_keras.methods.EarlyBird.run) and 'early_bird' in dir(lt_keras)\n"
            "assert all(hasattr(lt_keras, name) for name in lt_keras.__all__)\n"
            "try:\n    lt_keras.nothing\nexcept AttributeError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "module 'lt_keras' has no attribute 'nothing'"
