"""UI helpers for the pages (Streamlit): the session and its store (`session`), cached calls
(`caching`), the shared pickers (`sidebar`), a progress bar (`progress`), the download
popover (`downloads`), one-line input errors (`errors`), caveats beside numbers (`caveats`), the narrow-screen layout
(`layout`) and pure chart builders (`charts`). Pages import what they use from here."""
from ui.caching import cached, qualified_name
from ui.caveats import show_caveats
from ui.downloads import download_popover
from ui.errors import input_errors, show_input_error
from ui.layout import narrow_screens
from ui.progress import ProgressBar
from ui.session import (data_token, ensure_store, is_planned, planned, read_only_notice, settings,
                        store)
from ui.sidebar import require_test_set, sidebar, test_set

__all__ = ["ProgressBar", "cached", "data_token", "download_popover", "ensure_store", "input_errors",
           "is_planned", "narrow_screens", "planned", "qualified_name", "read_only_notice", "require_test_set",
           "settings", "show_caveats", "show_input_error", "sidebar", "store", "test_set"]
