"""ILCscope core: pure logic over numpy, pandas and DuckDB (no Streamlit, no torch)."""

__version__ = "0.20.0"  # shown in shared reports (issue 20's findings)
