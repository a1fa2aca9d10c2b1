"""Puts this plugin's conf/ on Hydra's search path so `method=scaled_bias` composes."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ScaledBiasSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="peftbench-scaled-bias", path="pkg://peftbench_scaled_bias.conf")
