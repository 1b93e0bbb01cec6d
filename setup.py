"""The packages of the wheel: pixel_lightning, and conf/ (the Hydra configs, kept at the top of the
repository) carried as pixel_lightning/conf, where the console commands find it
(pixel_lightning/commands/__init__.py). The rest of the metadata is in pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

# Every config group folder, as a package of .yaml data; conf/local/ holds one machine's own settings.
config_packages = ["pixel_lightning.conf"] + [
    f"pixel_lightning.conf.{group}" for group in find_namespace_packages("conf", exclude=["local", "local.*"])
]
setup(
    packages=find_packages(include=["pixel_lightning", "pixel_lightning.*"]) + config_packages,
    package_dir={"pixel_lightning.conf": "conf"},
    # the zoo's trained models: pixel_lightning/zoo/<name>/{config.json,model.safetensors}
    package_data={"pixel_lightning": ["py.typed", "zoo/*/config.json", "zoo/*/model.safetensors"]}
    | {package: ["*.yaml"] for package in config_packages},
)
