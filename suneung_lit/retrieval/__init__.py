"""Offline retrieval: a Korean BM25 index over a user's corpus, optional dense and hybrid search, support passages
for the ``support`` prompt template, and RAFT-style training data.

Teams that measured retrieval on this task saw accuracy fall by 1.4 to 2.3 points, so nothing here runs unless it is
asked for: build an index (``python -m suneung_lit.retrieval index``), add a ``support`` column to a data file
(``retrieve``), and train or predict with ``data.template: support``.
"""
