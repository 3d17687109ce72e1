"""Package mapping: the repo keeps the service layers `service/`, `workers/`, `orchestrator/` and the
`kernels/` at the top level (see docs/architecture.md) but installs them as `faircalib.service`,
`faircalib.workers`, `faircalib.orchestrator`, `faircalib.kernels` so that no import name collides with
other distributions (Hugging Face ships a `kernels`)."""
from setuptools import find_packages, setup

packages = find_packages(include=["faircalib", "faircalib.*"])
package_dir = {"faircalib": "faircalib"}
for sub in ("orchestrator", "workers", "service", "kernels"):
    package_dir[f"faircalib.{sub}"] = sub
    packages.append(f"faircalib.{sub}")
    packages += [f"faircalib.{sub}.{p}" for p in find_packages(sub)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"faircalib": ["zoo/*/*", "data/builtin/*", "eval/tasks/**/*"],
                  "faircalib.orchestrator": ["migrations/*", "migrations/**/*", "*.ini", "*.yaml"]},
    include_package_data=True,
)
