"""The gateway's own files on local disk (staging spools, pull-through spools, cached blobs):
how they are written and read."""
