"""The ``peftbench`` subcommands (report, params, list, export, bench) and the benchmark suite."""
