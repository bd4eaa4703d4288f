"""The benchmark matrix: cells, verification, load, records, reports.

``cell`` runs one strategy x server cell; ``runner`` runs a profile of cells, each in
its own process group with a hard deadline; ``report`` and ``compare`` render records.
"""
