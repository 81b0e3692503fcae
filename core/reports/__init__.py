"""Store -> the DataFrames that pages show and the CLI prints (benchmark, complement, ...)."""
