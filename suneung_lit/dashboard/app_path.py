"""Where the app script lives and how the launcher hands it its flags; importable without Streamlit."""

from pathlib import Path

APP = Path(__file__).with_name("app.py")
ARGS_VARIABLE = "SUNEUNG_LIT_DASHBOARD_ARGS"
