"""Package mapping: the repo keeps the service layers `service/`, `workers/`, `orchestrator/` and the
`kernels/` at the top level (see docs/architecture.md) but installs them as `faircalib.service`,
`faircalib.workers`, `faircalib.orchestrator`, `faircalib.kernels` so that no import name collides with
other distributions (Hugging Face ships a `kernels`).

Data directories inside the package (the offline lm-eval suite `faircalib/eval/tasks/` and its `data/`,
the zoo `faircalib/zoo/`) are declared as (namespace) packages with their files as package data, so
setuptools neither drops them nor warns; a zoo model is a directory `faircalib/zoo/NAME/` (any NAME,
dashes included: `zoo/*/*` picks up new ones such as `zoo/long-llada/`, and their subdirectories)."""
from setuptools import find_namespace_packages, find_packages, setup

# every directory under faircalib/ whose dotted name is importable (data dirs included), minus caches
packages = [p for p in find_namespace_packages(include=["faircalib", "faircalib.*"], exclude=["*.__pycache__"])
            if all(part.isidentifier() for part in p.split("."))]
package_dir = {"faircalib": "faircalib"}
for sub in ("orchestrator", "workers", "service", "kernels"):
    package_dir[f"faircalib.{sub}"] = sub
    packages.append(f"faircalib.{sub}")
    packages += [f"faircalib.{sub}.{p}" for p in find_packages(sub)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "faircalib.zoo": ["*/*", "*/**/*"],                # zoo/NAME/{config.json, model.safetensors, ...}
        "faircalib.eval.tasks": ["*.yaml", "*.py"],        # the offline suite's task YAMLs + hooks
        "faircalib.eval.tasks.data": ["*.jsonl"],          # its committed data
        "faircalib.orchestrator": ["migrations/*", "migrations/**/*", "*.ini", "*.yaml"],
    },
    include_package_data=True,
)
