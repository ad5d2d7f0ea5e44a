"""The joint search: genome, lowering to the cost model, accuracy sources, objectives, the GA and
its results. ``search.py`` is its command line (:mod:`cimnas.search.cli`)."""
