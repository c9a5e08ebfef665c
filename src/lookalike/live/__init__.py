"""A living catalogue: products added, changed and deleted while the service runs, without a rebuild.

``lists`` keeps the in-memory similar lists exact, ``updater`` commits each change durably and applies it,
``index_sync`` brings the vector files and the index up to date in the background, ``catalogue_diff``
applies the differences between a catalogue file and a workspace (``lookalike update``).
"""
