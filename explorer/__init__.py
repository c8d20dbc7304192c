"""People → answers: the ``chorus`` command line and the Streamlit explorer."""
