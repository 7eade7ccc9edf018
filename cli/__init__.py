"""The `textclf` command line: the composition root above the core and every stage."""
