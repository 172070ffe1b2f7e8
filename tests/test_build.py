"""BUILD stays in step with the tree: every module and test has a target, every file exists."""
import glob as pyglob
import os

from tests.conftest import REPO


def load_build():
    """Evaluate BUILD's Starlark with recording stand-ins for the rules."""
    targets = {}

    def rule(kind):
        def record(name, **attrs):
            assert name not in targets, f"duplicate target {name}"
            targets[name] = {"kind": kind, **attrs}

        return record

    def glob(patterns):
        found = set()
        for pattern in patterns:
            found.update(os.path.relpath(p, REPO) for p in pyglob.glob(os.path.join(REPO, pattern), recursive=True))
        return sorted(found)

    source = open(os.path.join(REPO, "BUILD")).read()
    source = "\n".join(line for line in source.splitlines() if not line.startswith("load("))
    env = {
        "py_library": rule("py_library"),
        "py_binary": rule("py_binary"),
        "py_test": rule("py_test"),
        "package": lambda **_: None,
        "glob": glob,
        "requirement": lambda name: f"@pypi//{name}",
    }
    exec(compile(source, "BUILD", "exec"), env)
    return targets


def tree(folder):
    return {
        os.path.relpath(os.path.join(root, f), REPO)
        for root, _, files in os.walk(os.path.join(REPO, folder))
        for f in files
        if f.endswith(".py")
    }


def test_every_module_and_test_file_has_a_target():
    targets = load_build()
    covered = {src for t in targets.values() for src in t.get("srcs", [])}
    missing = sorted((tree("lt_keras") | tree("tests") | tree("tools")) - covered)
    assert missing == []
    tests = {t["srcs"][0] for t in targets.values() if t["kind"] == "py_test"}
    assert tests == {p for p in tree("tests") if os.path.basename(p).startswith("test_")}


def test_every_referenced_file_and_target_exists():
    targets = load_build()
    for name, target in targets.items():
        for attr in ("srcs", "data", "main"):
            values = target.get(attr, [])
            for path in [values] if isinstance(values, str) else values:
                if not path.startswith(":"):
                    assert os.path.exists(os.path.join(REPO, path)), f"{name}.{attr}: {path} does not exist"
        for dep in target.get("deps", []):
            if dep.startswith(":"):
                assert dep[1:] in targets, f"{name} depends on unknown target {dep}"
            else:
                assert dep.startswith("@pypi//")


def test_third_party_deps_match_setup_cfg():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    required = {
        line.split(">")[0].split("<")[0].split("=")[0].strip().lower()
        for line in cfg["options"]["install_requires"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    }
    declared = {d[len("@pypi//"):].lower() for d in load_build()["lt_keras"]["deps"]}
    assert required == declared
