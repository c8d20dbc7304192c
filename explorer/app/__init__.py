"""The Streamlit explorer: ``main.py`` (navigation), one flat script per page under ``pages/``,
Streamlit-free logic in ``backend.py`` and Streamlit caching/session glue in ``state.py``."""
