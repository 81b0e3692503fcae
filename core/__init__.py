"""ILCscope core: pure logic over numpy, pandas and DuckDB (no Streamlit, no torch)."""
