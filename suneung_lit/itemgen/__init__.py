"""Items written by a language model: ``python -m suneung_lit.data generate PASSAGES --model M --output DIR``.

``candidates`` turns a writer's text into an item (or says why not), ``judging`` runs a loaded model as writer and
judge, ``run`` applies the filters in order and keeps every passage's outcome in append-only, resumable files.
"""
