"""Exploring search results: the functions behind ``streamlit run app.py``.

`data` opens storages and turns studies into one DataFrame row per trial (with design features
derived from the config), `analysis` computes latency per device, feasibility, fronts, samples,
EDFs, rank correlations and importances, `figures` builds the plotly figures, `downloads` wraps
the export package, `demo` creates a first study, `profiles` picks the device profile a prediction
uses and `warm` builds the kernel rows predictions need ahead of time, in a child process. The
app only lays these out and caches them.
"""

from .data import DESIGN_CHOICES, StorageError, StudyInfo, list_studies, load_records, records_frame

__all__ = ["DESIGN_CHOICES", "StorageError", "StudyInfo", "list_studies", "load_records", "records_frame"]
