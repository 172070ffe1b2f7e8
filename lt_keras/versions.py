"""The versions a result was made with: recorded in every run directory and ticket."""
import importlib.metadata
import platform

PACKAGES = ("lt_keras", "tensorflow", "tf_keras", "tensorflow-model-optimization", "tensorflow-datasets", "numpy",
            "absl-py")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
