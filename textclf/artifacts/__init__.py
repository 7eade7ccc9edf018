"""What crosses a stage boundary: the run manifest and its records, files (sha256, atomic writes), the Bento."""
