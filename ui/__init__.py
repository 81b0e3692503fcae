"""UI helpers for the pages: session, cached calls, pickers, chart builders (Streamlit)."""
