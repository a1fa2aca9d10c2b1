"""Adds the folders in ``$PEFTBENCH_CONFIG_PATH`` (``os.pathsep``-separated) to Hydra's config search
path, for every command that composes a config: ``peftbench-train``, sweeps and their jobs,
``peftbench params``, ``list``, ``export``. A folder there is laid out like peftbench's ``conf/``
(``dataset/my_set.yaml`` → ``dataset=my_set``). Appended after peftbench's own conf/: a user file adds
names, it never silently replaces a built-in of the same name."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class PeftbenchConfigPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from peftbench.config.paths import user_config_dirs

        for d in user_config_dirs():
            search_path.append(provider="peftbench-user", path=f"file://{d}")
