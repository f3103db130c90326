"""A Streamlit dashboard to browse data, compare prediction runs and read training curves.

``python -m suneung_lit.dashboard [--port N] [--data FILE] [--runs CSV...] [--logs DIR] [--model DIR]`` starts it
headless. The numbers it shows come from plain functions in :mod:`suneung_lit.dashboard.analysis`, which the app
only lays out.
"""
