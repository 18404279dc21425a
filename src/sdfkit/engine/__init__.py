"""The per-document engine: stages run locally in a process pool or on Ray Data."""
